"""Serve your own model: the ``torch`` and ``onnx`` commands of ``python -m lstm_service.export``.

    python -m lstm_service.export torch --module my_model.py:RNNModel --kwargs kwargs.json \\
        --checkpoint model.pt --vocab vocab.txt --out models/mine [--batch-first] [--quantize int8] [--data TEXT]
    python -m lstm_service.export onnx --onnx lm.onnx --tokens input --state h0=hn,c0=cn --logits output \\
        --tokenizer tokenizer.json --out models/theirs [--time-first]   (or --mapping mapping.yaml)

Both write model.onnx (+ model.int8.onnx), the vocabulary file and model.json into --out,
after checking parity (torch vs onnxruntime for torch; one call vs token by token for
both) and loading the result as the server would. Conventions: docs/models.md.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .onnx import ExportError
from .vocab_files import VocabChoice, prepare, validation_ids


def _common(p: argparse.ArgumentParser) -> None:
    v = p.add_argument_group("vocabulary (default: bytes, 256 tokens)")
    v.add_argument("--vocab", type=Path, help="vocab.txt: one token per line, token id = line number (0-based)")
    v.add_argument("--tokenizer", type=Path, help="a Hugging Face tokenizer.json (BPE, WordPiece, Unigram)")
    v.add_argument("--unk", default="<unk>", help="--vocab's unknown-word token, used if present ('' for none)")
    v.add_argument("--eos", default="<eos>", help="--vocab's end-of-line token, used if present ('' for none)")
    v.add_argument("--lowercase", action="store_true", help="--vocab: lowercase text before looking words up")
    v.add_argument("--split", default="whitespace", choices=("whitespace", "punctuation"),
                   help="--vocab: split text on whitespace, or into words and punctuation marks")
    p.add_argument("--out", type=Path, required=True, help="model directory to write")
    p.add_argument("--name", help="model name in model.json (default: --out's folder name)")
    p.add_argument("--quantize", choices=("int8",), help="also write an int8 model")
    p.add_argument("--data", type=Path, help="a text whose last 10%% is used to report the validation loss")


def parse_args(argv) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m lstm_service.export", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("torch", help="a PyTorch module in the word_language_model convention")
    t.add_argument("--module", required=True, help="FILE.py:Class or package.module:Class")
    t.add_argument("--kwargs", type=Path, help="JSON object of the constructor's arguments")
    t.add_argument("--checkpoint", type=Path, required=True, help="the module's state_dict (torch.save)")
    t.add_argument("--batch-first", action="store_true", help="forward takes input [B,T] and returns [B,T,V]")
    t.add_argument("--no-explain", dest="explain", action="store_false",
                   help="skip model.explain.onnx (written when the module is embedding -> LSTM/GRU/RNN -> linear)")
    _common(t)
    o = sub.add_parser("onnx", help="an ONNX language model exported elsewhere, with its tensor names")
    o.add_argument("--onnx", type=Path, required=True, help="the ONNX file")
    o.add_argument("--mapping", type=Path, help="YAML: tokens, logits, state {in: out} (h first), time_first")
    o.add_argument("--tokens", help="the token input's name (int64/int32 [B,T])")
    o.add_argument("--state", help="state input=output pairs, h first: h0=hn or h0=hn,c0=cn")
    o.add_argument("--logits", help="the logits (or log-probs) output's name (float [B,T,V])")
    o.add_argument("--time-first", action="store_true", help="tokens are [T,B] and logits [T,B,V]")
    _common(o)
    return p.parse_args(argv)


def _vocab(args) -> VocabChoice:
    return VocabChoice(args.vocab, args.tokenizer, args.unk, args.eos, args.lowercase, args.split)


def run_torch(args, log) -> dict:
    from . import user_torch
    from .user_bundle import finish_model_dir
    from .user_explain import write_user_explain

    args.out.mkdir(parents=True, exist_ok=True)
    entry, vocab = prepare(_vocab(args), args.out)
    module = user_torch.build_module(args.module, args.kwargs, args.checkpoint)
    found = user_torch.probe(module, args.batch_first, vocab.size)
    wrapper = user_torch.export_user_onnx(module, found, args.batch_first, args.out / "model.onnx")
    return finish_model_dir(
        args.out, name=args.name or args.out.name, cell=found.cell, parts=found.parts, layers=found.layers,
        hidden=found.hidden, vocab_size=found.vocab_size, embed_size=found.embed_size, vocab_entry=entry,
        source={"from": "torch", "module": args.module, "batch_first": args.batch_first,
                "checkpoint": Path(args.checkpoint).name},
        reference=user_torch.reference(wrapper), quantize=args.quantize,
        explain=(lambda: write_user_explain(module, user_torch.reference(wrapper), args.out, log))
        if args.explain else None,
        validation=validation_ids(vocab, args.data) if args.data else None,
        data_name=args.data.name if args.data else None, log=log,
    )


def run_onnx(args, log) -> dict:
    from .foreign_onnx import PART_NAMES, Mapping, import_onnx, load_mapping_file, parse_state
    from .user_bundle import finish_model_dir

    if args.mapping:
        mapping = load_mapping_file(args.mapping)
    elif args.tokens and args.state and args.logits:
        mapping = Mapping(args.tokens, args.logits, parse_state(args.state), args.time_first)
    else:
        raise ExportError("name the graph's tensors: --tokens NAME --state IN=OUT[,IN=OUT] --logits NAME, "
                          "or --mapping FILE.yaml")
    args.out.mkdir(parents=True, exist_ok=True)
    entry, vocab = prepare(_vocab(args), args.out)
    layers, hidden, heads, _ = import_onnx(args.onnx, mapping, args.out / "model.onnx")
    if vocab.size != heads:
        which = "smaller" if vocab.size < heads else "larger"
        raise ExportError(f"the vocabulary has {vocab.size} tokens, {which} than the model's head of {heads}; "
                          "they must be the same size (one token per output of the head)")
    parts = PART_NAMES[: len(mapping.state)]
    return finish_model_dir(
        args.out, name=args.name or args.out.name, cell="lstm" if len(parts) == 2 else "rnn", parts=parts,
        layers=layers, hidden=hidden, vocab_size=heads, embed_size=0, vocab_entry=entry,
        source={"from": "onnx", "file": Path(args.onnx).name, "tokens": mapping.tokens, "logits": mapping.logits,
                "state": [list(pair) for pair in mapping.state], "time_first": mapping.time_first},
        quantize=args.quantize, validation=validation_ids(vocab, args.data) if args.data else None,
        data_name=args.data.name if args.data else None, log=log,
    )


def main(argv) -> int:
    args = parse_args(argv)
    log = lambda line: print(line, flush=True)  # noqa: E731
    try:
        (run_torch if args.command == "torch" else run_onnx)(args, log)
    except (ExportError, OSError, ValueError) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    return 0
