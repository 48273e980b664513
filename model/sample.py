"""Generate text from a checkpoint with torch (the served path is ONNX; this is for training-time checks).

    python -m lstm_service.model.sample --checkpoint runs/shakespeare --prompt "ROMEO:" -n 300
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from .checkpoint import CheckpointError, load_model
from .data import decode, encode


@torch.no_grad()
def sample(model, prompt: str, length: int, temperature: float = 1.0, top_k: int = 0,
           generator: torch.Generator | None = None) -> list[int]:
    """Ids of ``length`` new tokens after ``prompt`` (prompt prefilled in one call)."""
    ids = encode(prompt) or [ord("\n")]
    h, c = model.initial_state(1)
    logits, h, c = model(torch.tensor([ids]), h, c)
    out = []
    for _ in range(length):
        scores = logits[0, -1] / max(temperature, 1e-6)
        if top_k:
            kth = torch.topk(scores, top_k).values[-1]
            scores = scores.masked_fill(scores < kth, float("-inf"))
        token = int(torch.multinomial(torch.softmax(scores, -1), 1, generator=generator))
        out.append(token)
        logits, h, c = model(torch.tensor([[token]]), h, c)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m lstm_service.model.sample", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--prompt", default="\n")
    p.add_argument("-n", "--length", type=int, default=300, help="new bytes to generate")
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top-k", type=int, default=0, help="keep the k likeliest tokens (0: all)")
    p.add_argument("--seed", type=int, default=None)
    args = p.parse_args(argv)
    if args.temperature <= 0 or args.length < 0 or args.top_k < 0:
        p.error("--temperature must be > 0; --length and --top-k must be >= 0")
    try:
        model = load_model(args.checkpoint)
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    generator = torch.Generator().manual_seed(args.seed) if args.seed is not None else None
    top_k = min(args.top_k, model.config.vocab_size)
    ids = sample(model, args.prompt, args.length, args.temperature, top_k, generator)
    sys.stdout.write(args.prompt + decode(ids))
    return 0


if __name__ == "__main__":
    sys.exit(main())
