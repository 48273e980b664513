"""Train a byte-level recurrent language model with truncated BPTT.

    python -m lstm_service.model.train --data ../shared/data/tinyshakespeare.txt --out runs/lstm

The hidden (and cell) state is carried from one chunk to the next and
detached between them, so gradients flow through ``--seq-len`` steps while
the state sees the whole text. The best checkpoint by validation loss is
kept in --out; --resume continues from --out's last state (step, optimizer,
weight average and the clock, so --time-limit counts the whole run).
Every validation is appended to --out/curve.jsonl (minutes, step, losses).

Regularisation (docs/training.md): --locked-dropout, --input-dropout,
--weight-drop or --embed-dropout switch to the AWD-LSTM forward of
model/regularize.py, where --dropout is locked (one mask per stream, shared
over time) between layers and on the output. --ema averages the weights;
the average is what is validated and saved. None of it is in the checkpoint's
config: the saved model is a plain LanguageModel.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from .averaging import WeightAverage
from .checkpoint import CheckpointError, load_metrics, save_model
from .config import CELL_KINDS, ModelConfig
from .data import DataError, batchify, chunks, load_split
from .evaluate import bits_per_byte, validation_loss
from .lm import LanguageModel
from .regularize import Regularization, RegularizedForward


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m lstm_service.model.train", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True, help="UTF-8 text file; last 10%% is validation")
    p.add_argument("--out", type=Path, required=True, help="checkpoint directory")
    p.add_argument("--cell", choices=CELL_KINDS, default="lstm")
    p.add_argument("--embed", type=int, default=64, help="embedding size (default 64)")
    p.add_argument("--hidden", type=int, default=512, help="hidden units per layer (default 512)")
    p.add_argument("--layers", type=int, default=2, help="recurrent layers (default 2)")
    p.add_argument("--dropout", type=float, default=0.1, help="dropout between layers and on the output (default 0.1)")
    reg = p.add_argument_group("regularisation (training only; see docs/training.md)")
    reg.add_argument("--locked-dropout", action="store_true",
                     help="make --dropout locked: one mask per stream, shared over time")
    reg.add_argument("--input-dropout", type=float, default=0.0, help="locked dropout on the embedded bytes")
    reg.add_argument("--weight-drop", type=float, default=0.0, help="DropConnect on hidden-to-hidden weights")
    reg.add_argument("--embed-dropout", type=float, default=0.0, help="drop whole byte embeddings")
    reg.add_argument("--ema", type=float, default=0.0, help="EMA decay of the weights (0: off), e.g. 0.998")
    p.add_argument("--batch-size", type=int, default=64, help="parallel text streams (default 64)")
    p.add_argument("--seq-len", type=int, default=128, help="BPTT length (default 128)")
    p.add_argument("--epochs", type=float, default=10, help="passes over the training text")
    p.add_argument("--time-limit", type=float, default=0, help="stop after this many minutes in all (0: none)")
    p.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (AdamW)")
    p.add_argument("--weight-decay", type=float, default=0.01, help="AdamW decoupled weight decay")
    p.add_argument("--schedule", choices=("cosine", "step", "constant"), default="cosine")
    p.add_argument("--warmup", type=int, default=100, help="linear warm-up steps")
    p.add_argument("--clip", type=float, default=1.0, help="gradient norm clip")
    p.add_argument("--eval-every", type=int, default=500, help="steps between validations")
    p.add_argument("--eval-minutes", type=float, default=0, help="also validate every this many minutes")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--bf16", action="store_true",
                   help="run the forward pass in bfloat16 autocast (weights, optimizer and validation stay fp32)")
    p.add_argument("--resume", action="store_true", help="continue from --out's last state")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")
    return p.parse_args(argv)


def regularization(args) -> Regularization | None:
    """The AWD forward's settings, or None for the plain forward."""
    if not (args.locked_dropout or args.input_dropout or args.weight_drop or args.embed_dropout):
        return None
    return Regularization(input_dropout=args.input_dropout, hidden_dropout=args.dropout,
                          output_dropout=args.dropout, weight_drop=args.weight_drop,
                          embed_dropout=args.embed_dropout)


def learning_rate(args, step: int, progress: float) -> float:
    """Peak LR after a linear warm-up, decayed by ``progress`` (0..1) through training."""
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    if args.schedule == "cosine":
        return args.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))
    if args.schedule == "step":
        return args.lr * (0.1 ** int(progress * 3))  # /10 at 1/3 and 2/3 of training
    return args.lr


class Run:
    """Model, optimizer, weight average and progress: everything --resume restores."""

    def __init__(self, args) -> None:
        self.args = args
        self.config = ModelConfig(cell=args.cell, embed_size=args.embed, hidden_size=args.hidden,
                                  layers=args.layers, dropout=args.dropout)
        self.step, self.elapsed, self.tokens = 0, 0.0, 0
        self.best = math.inf
        if args.resume:
            self._load()
        else:
            self._build(self.config)
        reg = regularization(args)
        self.forward = RegularizedForward(self.model, reg) if reg else self.model

    def _build(self, config: ModelConfig) -> None:
        self.model = LanguageModel(config)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=self.args.lr,
                                           weight_decay=self.args.weight_decay)
        self.ema = WeightAverage(self.model, self.args.ema) if self.args.ema else None

    def _load(self) -> None:
        path = self.args.out / "trainer.pt"
        if not path.is_file():
            raise CheckpointError(f"--resume: {path} does not exist")
        state = torch.load(path, map_location="cpu", weights_only=True)
        self.config = ModelConfig.from_dict(json.loads(state["config"]))
        self._build(self.config)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.ema is not None and "ema" in state:
            self.ema.load_state_dict(state["ema"])
        self.step = int(state["step"])
        self.elapsed = float(state.get("elapsed", 0.0))
        self.tokens = int(state.get("tokens", 0))
        self.best = load_metrics(self.args.out).get("validation_loss", math.inf)

    def save_trainer(self) -> None:
        state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(), "step": self.step,
                 "elapsed": self.elapsed, "tokens": self.tokens, "config": json.dumps(self.config.to_dict())}
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        tmp = self.args.out / "trainer.pt.tmp"
        torch.save(state, tmp)
        tmp.replace(self.args.out / "trainer.pt")


def train(args) -> dict:
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    split = load_split(args.data)
    rows = batchify(split.train, args.batch_size)
    steps_per_epoch = math.ceil((rows.shape[1] - 1) / args.seq_len)
    total_steps = max(1, int(args.epochs * steps_per_epoch))
    run = Run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    params = sum(p.numel() for p in run.model.parameters())
    print(f"model: {run.config.cell} {run.config.layers}x{run.config.hidden_size}, {params/1e6:.2f}M parameters; "
          f"{split.train.size} train / {split.validation.size} validation bytes; "
          f"{total_steps} steps of {args.batch_size}x{args.seq_len}; {regularization(args) or 'plain dropout'}"
          f"{f', ema {args.ema}' if args.ema else ''}", flush=True)
    if args.bf16 and not native_bf16():
        print("warning: --bf16 on a CPU without bf16 instructions (AVX512-BF16 or AMX): autocast emulates it and "
              "may be slower than fp32; `python -m lstm_service.model.step_speed` times both", file=sys.stderr)
    limit = args.time_limit * 60 if args.time_limit else math.inf
    bar = tqdm(total=total_steps, initial=run.step, disable=args.no_progress, unit="step", dynamic_ncols=True)
    clock = _Clock(run.elapsed)
    metrics, train_loss, last_eval = {}, math.nan, clock.seconds()
    run.forward.train()
    while run.step < total_steps and clock.seconds() < limit:
        # A random shift per epoch so chunk boundaries differ between passes.
        shift = int(rng.integers(0, args.seq_len))
        h, c = run.model.initial_state(args.batch_size)
        for inputs, targets in chunks(rows[:, shift:], args.seq_len):
            if run.step >= total_steps or clock.seconds() >= limit:
                break
            # With --time-limit the schedule anneals to whichever ends first, the
            # steps or the clock, so a time-boxed run still finishes its decay.
            progress = min(1.0, max(run.step / total_steps, clock.seconds() / limit))
            lr = learning_rate(args, run.step, progress)
            loss, h, c = _step(run, inputs, targets, h, c, lr)
            train_loss = loss if math.isnan(train_loss) else 0.98 * train_loss + 0.02 * loss
            run.tokens += inputs.size
            tok_s = run.tokens / max(1e-9, clock.seconds())
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{tok_s:,.0f}", lr=f"{lr:.1e}")
            due = args.eval_minutes and clock.seconds() - last_eval >= args.eval_minutes * 60
            if run.step % args.eval_every == 0 or run.step == total_steps or due:
                metrics = _validate(run, split, clock, train_loss, bar.write)
                last_eval = clock.seconds()
    bar.close()
    if not metrics or metrics["step"] != run.step:
        metrics = _validate(run, split, clock, train_loss, print)
    if run.ema is not None:
        # The average can trail the last weights when the run was short for its
        # decay; the final weights are validated too and kept if they are better.
        metrics = _validate(run, split, clock, train_loss, print, average=False)
    return metrics


def native_bf16() -> bool:
    """Whether oneDNN has bf16 kernels on this CPU. --bf16's 2x comes from them;
    without them (AVX2-only CPUs) the time-boxed recipe would see fewer bytes."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a private probe: absent or failing means unknown, so warn
        return False


class _Clock:
    """Training seconds, counting the earlier segments of a resumed run."""

    def __init__(self, already: float) -> None:
        self.start = time.monotonic() - already

    def seconds(self) -> float:
        return time.monotonic() - self.start


def _step(run: Run, inputs, targets, h, c, lr: float):
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    h, c = h.detach(), c.detach()  # truncate BPTT at the chunk boundary
    # bf16 autocast: the matrix products run in bfloat16 (about 2x the tokens/s on
    # a CPU with AVX512-BF16), the fp32 weights get the gradients; the carried
    # state is fp32 again for the next chunk.
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=run.args.bf16):
        logits, h, c = run.forward(torch.from_numpy(inputs), h, c)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), torch.from_numpy(targets).flatten())
    h, c = h.float(), c.float()
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(run.model.parameters(), run.args.clip)
    run.optimizer.step()
    if run.ema is not None:
        run.ema.update(run.model)
    run.step += 1
    return loss.item(), h, c


def _validate(run: Run, split, clock: _Clock, train_loss: float, write, average: bool = True) -> dict:
    """Validate (the weight average, with --ema), keep the best, save the trainer state, log the curve."""
    args = run.args
    run.elapsed = clock.seconds()
    average = average and run.ema is not None
    weights = "average" if average else "last"
    with run.ema.swapped_in(run.model) if average else nullcontext():
        loss = validation_loss(run.model, split.validation)
        if loss < run.best:
            _save_best(run, loss, weights)
    run.best = min(run.best, loss)
    metrics = {
        "step": run.step,
        "step_validation_loss": loss,
        "best_validation_loss": run.best,
        "train_tokens_per_s": run.tokens / max(1e-9, run.elapsed),
        "train_seconds": run.elapsed,
        "data": Path(args.data).name,
    }
    run.save_trainer()
    with open(args.out / "curve.jsonl", "a") as curve:
        curve.write(json.dumps({"minutes": round(run.elapsed / 60, 2), "step": run.step, "weights": weights,
                                "validation_loss": round(loss, 5), "train_loss": round(train_loss, 5)}) + "\n")
    write(f"step {run.step} ({run.elapsed / 60:.1f} min): {weights} weights: validation {loss:.4f} nats/byte "
          f"({bits_per_byte(loss):.3f} bits), train {train_loss:.4f}, best {run.best:.4f}")
    sys.stdout.flush()  # a log file (nohup ... > log) shows progress as it happens
    return metrics


def _save_best(run: Run, loss: float, weights: str) -> None:
    metrics = {"weights": weights, "step": run.step, "validation_loss": loss,
               "validation_bits_per_byte": bits_per_byte(loss),
               "train_tokens_per_s": run.tokens / max(1e-9, run.elapsed), "train_seconds": run.elapsed,
               "data": Path(run.args.data).name, "recipe": _recipe(run.args)}
    save_model(run.args.out, run.model, metrics)


def _recipe(args) -> dict:
    """The training flags that made this checkpoint (recorded in metrics.json, never in the graph)."""
    keys = ("dropout", "locked_dropout", "input_dropout", "weight_drop", "embed_dropout", "ema", "lr",
            "weight_decay", "batch_size", "seq_len", "schedule", "warmup", "clip", "time_limit", "seed", "bf16")
    return {k: getattr(args, k) for k in keys}


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        metrics = train(args)
    except (DataError, CheckpointError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; the best checkpoint so far is in", args.out, file=sys.stderr)
        return 130
    print(json.dumps(metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
