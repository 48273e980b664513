"""Parity of an ONNX file in the service's signature: against a reference (torch) on
several shapes, and one token at a time with the state carried against one call.

Works for any graph with the serving signature (tokens [B,T], ``<part>0`` states
[L,B,H] in; logits [B,T,V], ``<part>n`` out), so our own models, users' torch
modules and imported ONNX files are checked the same way.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np

# Shapes used to check an export; all differ from the (2, 3) example it is traced with.
CHECK_SHAPES = ((1, 1), (1, 7), (3, 5), (4, 16), (8, 2))
TOLERANCE = 1e-4

# (tokens [B,T] int64, state parts [L,B,H]) -> (logits [B,T,V], state parts)
Reference = Callable[[np.ndarray, Tuple[np.ndarray, ...]], Tuple[np.ndarray, Tuple[np.ndarray, ...]]]


def ort_session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _run(session, parts: Sequence[str], tokens: np.ndarray, state: Tuple[np.ndarray, ...]):
    feeds = {"tokens": tokens, **{f"{p}0": s for p, s in zip(parts, state)}}
    out = session.run(["logits", *(f"{p}n" for p in parts)], feeds)
    return out[0], tuple(out[1:])


def parity_errors(path: Path, vocab_size: int, layers: int, hidden: int, parts: Sequence[str],
                  reference: Optional[Reference] = None, seed: int = 0,
                  shapes=CHECK_SHAPES) -> Dict[str, float]:
    """Largest |ORT - reference| (when given) and |stepwise - one call| over ``shapes``.

    Non-zero start states are used so the state inputs are really exercised.
    """
    session = ort_session(path)
    rng = np.random.default_rng(seed)
    errors = {"torch_vs_onnxruntime": 0.0} if reference is not None else {}
    errors["stepwise_vs_whole"] = 0.0
    for batch, time_steps in shapes:
        tokens = rng.integers(0, vocab_size, size=(batch, time_steps), dtype=np.int64)
        state = tuple(rng.normal(0, 0.5, size=(layers, batch, hidden)).astype(np.float32) for _ in parts)
        logits, out_state = _run(session, parts, tokens, state)
        if reference is not None:
            want_logits, want_state = reference(tokens, state)
            for e, g in zip((want_logits, *want_state), (logits, *out_state)):
                errors["torch_vs_onnxruntime"] = max(errors["torch_vs_onnxruntime"], float(np.abs(e - g).max()))
        # One token at a time with the state carried must equal one T-token call.
        step_state, step_logits = state, []
        for t in range(time_steps):
            one, step_state = _run(session, parts, tokens[:, t: t + 1], step_state)
            step_logits.append(one)
        stepwise = (np.concatenate(step_logits, axis=1), *step_state)
        for whole, steps in zip((logits, *out_state), stepwise):
            errors["stepwise_vs_whole"] = max(errors["stepwise_vs_whole"], float(np.abs(whole - steps).max()))
    return errors


def over_tolerance(errors: Dict[str, float]) -> Dict[str, float]:
    return {k: v for k, v in errors.items() if v > TOLERANCE}
