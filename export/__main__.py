"""python -m lstm_service.export --checkpoint runs/NAME --out models/NAME [--quantize int8] [--data TEXT]

(A model of this project's trainer. Your own model: ``python -m lstm_service.export torch ...``
or ``... onnx ...``, export/user_cli.py and docs/models.md.)

Writes model.onnx (+ model.int8.onnx), model.explain.onnx and model.json into --out after
checking the graph with onnx.checker and against torch on several shapes.
With --data, the validation loss (last 10% of the text) is measured
through onnxruntime for every precision and recorded in model.json.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lstm_service.model.checkpoint import CheckpointError, load_metrics, load_model
from lstm_service.model.data import DataError, load_split

from .bundle import write_model_dir
from .onnx import ExportError


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m lstm_service.export", description=__doc__.split("\n\n")[0],
        epilog="Your own model: python -m lstm_service.export torch --help (a PyTorch module) or "
               "onnx --help (an ONNX file); docs/models.md.")
    p.add_argument("--checkpoint", type=Path, required=True, help="directory written by model.train")
    p.add_argument("--out", type=Path, required=True, help="model directory to write")
    p.add_argument("--name", help="model name in model.json (default: --out's folder name)")
    p.add_argument("--quantize", choices=("int8",), help="also write an int8 model")
    p.add_argument("--data", type=Path, help="training text, to measure validation loss through onnxruntime")
    return p.parse_args(argv)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in ("torch", "onnx"):
        from .user_cli import main as user_main

        return user_main(argv)
    args = parse_args(argv)
    try:
        model = load_model(args.checkpoint)
        validation = load_split(args.data).validation if args.data else None
        write_model_dir(
            model, args.out, name=args.name or args.out.name, quantize=args.quantize,
            validation=validation, data_name=args.data.name if args.data else None,
            training=load_metrics(args.checkpoint), log=lambda line: print(line, flush=True),
        )
    except (CheckpointError, DataError, ExportError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
