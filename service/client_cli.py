"""``lstm-client``: talk to a running server from the shell.

    lstm-client generate "ROMEO:" -n 200          # sample 200 tokens after the prompt
    lstm-client stream                            # type text, see the next-token predictions
    lstm-client sessions | models | health

--target (or LSTM_TARGET) picks the server, default 127.0.0.1:50051;
--tls/--ca for TLS.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

import grpc

from .client import DEFAULT_TARGET, Client


def cmd_generate(client: Client, args) -> int:
    out = sys.stdout
    if not args.session:
        out.write(args.prompt)
    out.flush()
    last = None
    for response in client.generate(
        args.prompt, session_id=args.session or "", max_tokens=args.n, temperature=args.temperature,
        top_k=args.top_k, top_p=args.top_p, seed=args.seed, stop=args.stop or (),
    ):
        out.write(response.text)
        out.flush()
        last = response
    out.write("\n")
    if last is not None and args.verbose:
        reason = {1: "length", 2: "stop"}.get(last.finish_reason, "?")
        print(f"[finished: {reason}; session steps {last.steps}]", file=sys.stderr)
    return 0


def _predictions(result, top_k: int) -> str:
    top = result.predictions[-1].top[:top_k] if result.predictions else []
    # ASCII tokens as quoted text, other bytes (parts of longer characters) as \xNN
    shown = "  ".join(f"{repr(c.text) if c.text else f'{c.token:#04x}'} {c.prob:.3f}" for c in top)
    return f"[{result.steps} tokens] next: {shown}"


def cmd_stream(client: Client, args) -> int:
    tty = sys.stdin.isatty()
    if tty:
        print("Type text; each line is fed to one session (Ctrl-D ends). '/reset' starts over.", file=sys.stderr)
    start = False
    with client.stream(args.session or None, top_k=args.top_k) as stream:
        print(f"session {stream.session_id}", file=sys.stderr)
        while True:
            if tty:
                print("> ", end="", file=sys.stderr, flush=True)
            line = sys.stdin.readline()
            if not line:
                break
            text = line.rstrip("\n") + ("\n" if args.newlines else "")
            if text.strip() == "/reset":
                print("(the next line starts from a fresh state)")
                start = True
                continue
            if not text:
                continue
            print(_predictions(stream.send(text, start=start), args.top_k), flush=True)
            start = False
    return 0


def cmd_sessions(client: Client, args) -> int:
    listing = client.list_sessions(args.limit)
    print(f"{listing.total} session(s) (limit {listing.max_sessions})")
    for s in listing.sessions:
        state = "busy" if s.busy else f"idle {s.idle_seconds:.0f}s, expires in {s.expires_in_seconds:.0f}s"
        print(f"  {s.id}  {s.steps} tokens  age {s.age_seconds:.0f}s  {state}")
    return 0


def cmd_models(client: Client, args) -> int:
    for m in client.models():
        print(f"{m.name}: {m.cell} {m.layers}x{m.hidden_size}, vocab {m.vocab_kind} {m.vocab_size}, "
              f"precision {m.precision} (has {', '.join(m.precisions)}), providers {', '.join(m.providers)}")
        if m.validation_loss == m.validation_loss:  # not NaN
            print(f"  validation loss {m.validation_loss:.4f} nats/token")
    return 0


def cmd_health(client: Client, args) -> int:
    status = client.health(args.service)
    print(status)
    return 0 if status == "SERVING" else 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lstm-client", description="Client for the lstm.v1 gRPC service.")
    p.add_argument("--target", default=os.environ.get("LSTM_TARGET", DEFAULT_TARGET),
                   help=f"server address host:port [env LSTM_TARGET; default {DEFAULT_TARGET}]")
    p.add_argument("--tls", action="store_true", help="use TLS (system roots unless --ca)")
    p.add_argument("--ca", help="PEM file with root certificates for TLS")
    p.add_argument("--timeout", type=float, default=None, help="deadline per call, seconds")
    sub = p.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate", help="sample text after a prompt")
    g.add_argument("prompt", nargs="?", default="", help="text to start from")
    g.add_argument("-n", type=int, default=200, help="tokens to generate (default 200)")
    g.add_argument("--temperature", type=float, default=None, help="0 greedy; default 1")
    g.add_argument("--top-k", type=int, default=0, help="sample among the k most likely (0: all)")
    g.add_argument("--top-p", type=float, default=None, help="nucleus cut, (0, 1]")
    g.add_argument("--seed", type=int, default=None, help="same seed, same text")
    g.add_argument("--stop", action="append", help="stop after this text (repeatable)")
    g.add_argument("--session", help="continue this session (state keeps the generated text)")
    g.add_argument("-v", "--verbose", action="store_true", help="print why it stopped")
    s = sub.add_parser("stream", help="type text, see next-token predictions (one session)")
    s.add_argument("--session", help="attach to an existing session instead of a new one")
    s.add_argument("--top-k", type=int, default=5, help="predictions to show (default 5)")
    s.add_argument("--newlines", action="store_true", help="feed the newline at the end of each line too")
    ls = sub.add_parser("sessions", help="list the server's sessions")
    ls.add_argument("--limit", type=int, default=100)
    sub.add_parser("models", help="describe the served model")
    h = sub.add_parser("health", help="grpc.health.v1 check (exit 1 unless SERVING)")
    h.add_argument("--service", default="", help="service name ('' = whole server)")
    return p


COMMANDS = {"generate": cmd_generate, "stream": cmd_stream, "sessions": cmd_sessions,
            "models": cmd_models, "health": cmd_health}


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    root = open(args.ca, "rb").read() if args.ca else None
    try:
        with Client(args.target, tls=args.tls, root_certificates=root, timeout=args.timeout) as client:
            return COMMANDS[args.command](client, args)
    except grpc.RpcError as exc:
        print(f"lstm-client: {exc.code().name}: {exc.details()} (server {args.target})", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
