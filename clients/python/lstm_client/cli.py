"""``lstm-client``: talk to a running server from the shell.

    lstm-client generate "ROMEO:" -n 200          # the prompt, then 200 sampled tokens
    lstm-client stream                            # type lines, see the next-token predictions
    lstm-client sessions | models | health

--target (or LSTM_TARGET) picks the server, default 127.0.0.1:50051 (a host
without a port means port 50051); --tls/--ca for TLS. Exit status: 0 done,
1 health is not SERVING, 2 any error (one line on stderr), 130 interrupted.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, Optional, Sequence

import grpc

from . import explain_plot
from .client import Client
from .errors import ClientError
from .targets import DEFAULT_TARGET, normalize_target

UINT32 = 2**32 - 1


class OneLineParser(argparse.ArgumentParser):
    """Usage errors as one line and exit status 2 (argparse's default prints the usage block too)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def number(kind: type, low: float, high: Optional[float] = None, above: bool = False) -> Callable[[str], float]:
    """An argparse type: a ``kind`` in [low, high] ((low, high] when ``above``), with a message saying so."""
    allowed = f"{'(' if above else '['}{low}, {high if high is not None else 'inf'}]"

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        if value < low or (above and value == low) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{text} is out of range; allowed: {allowed}")
        return value
    return parse


def target(text: str) -> str:
    try:
        return normalize_target(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def cmd_generate(client: Client, args) -> int:
    # The bound on -n is the server's own (GetModel's max_generate_tokens, its --max-generate-tokens),
    # read here rather than copied, so the two can never disagree.
    limit = client.model().max_generate_tokens
    if limit and args.n > limit:
        raise ValueError(f"generate: -n {args.n} is out of range: this server allows 1 to {limit} tokens per call "
                         "(its --max-generate-tokens)")
    out = sys.stdout
    last = None
    for response in client.generate(
        args.prompt, session_id=args.session or "", max_tokens=args.n, temperature=args.temperature,
        top_k=args.top_k, top_p=args.top_p, seed=args.seed, stop=args.stop or (),
    ):
        if last is None and args.echo:  # like Client.generate_text(echo=True), once the server has accepted
            out.write(args.prompt)
        out.write(response.text)
        out.flush()
        last = response
    out.write("\n")
    if last is not None and args.verbose:
        reason = {1: "length", 2: "stop"}.get(last.finish_reason, "?")
        print(f"[finished: {reason}; session steps {last.steps}]", file=sys.stderr)
    return 0


def predictions_line(result, top_k: int) -> str:
    """``[N tokens] next: 'e' 0.912  ' ' 0.031`` (just ``[N tokens]`` when no predictions were asked)."""
    top = result.predictions[-1].top[:top_k] if result.predictions else []
    if not top:
        return f"[{result.steps} tokens]"
    # ASCII tokens as quoted text, other bytes (parts of longer characters) as 0xNN
    shown = "  ".join(f"{repr(c.text) if c.text else f'{c.token:#04x}'} {c.prob:.3f}" for c in top)
    return f"[{result.steps} tokens] next: {shown}"


def cmd_stream(client: Client, args) -> int:
    tty = sys.stdin.isatty()
    if args.keys:
        if not tty:
            raise ValueError("stream --keys needs a terminal on stdin (without it, lines are fed)")
        from . import keys  # termios: POSIX terminals only

        with client.stream(args.session or None, top_k=args.top_k) as stream:
            return keys.run(stream, sys.stdin.fileno(), sys.stdout, lambda r: predictions_line(r, args.top_k))
    if tty:
        fed = "the line and its newline" if args.newlines else "the line without its newline"
        print(f"Type text and press Enter: {fed} is fed to one session, then its next-token predictions "
              "print (--keys: after every key). Ctrl-D ends; '/reset' starts over.", file=sys.stderr)
    start = False
    with client.stream(args.session or None, top_k=args.top_k) as stream:
        print(f"session {stream.session_id}", file=sys.stderr)
        while True:
            if tty:
                print("> ", end="", file=sys.stderr, flush=True)
            line = sys.stdin.readline()
            if not line:
                break
            if line.strip() == "/reset":
                print("(the next line starts from a fresh state)")
                start = True
                continue
            text = line.rstrip("\n") + ("\n" if args.newlines else "")
            if not text:
                continue
            print(predictions_line(stream.send(text, start=start), args.top_k), flush=True)
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
            unit = "nats/byte" if m.vocab_kind == "bytes" else "nats/token"
            print(f"  validation loss {m.validation_loss:.4f} {unit}")
    return 0


def cmd_health(client: Client, args) -> int:
    status = client.health(args.service)
    print(status)
    return 0 if status == "SERVING" else 1


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="lstm-client", description="Client for the lstm.v1 gRPC service.")
    p.add_argument("--target", type=target, default=os.environ.get("LSTM_TARGET", DEFAULT_TARGET),
                   help=f"server host[:port], port 50051 if left out [env LSTM_TARGET; default {DEFAULT_TARGET}]")
    p.add_argument("--tls", action="store_true", help="use TLS (system roots unless --ca)")
    p.add_argument("--ca", "--tls-ca", dest="ca", help="PEM file with root certificates for TLS")
    p.add_argument("--token", default=os.environ.get("LSTM_TOKEN"),
                   help="bearer token sent on every call [env LSTM_TOKEN]")
    p.add_argument("--cert", help="client certificate (PEM) for mutual TLS")
    p.add_argument("--key", help="the client certificate's private key (PEM)")
    p.add_argument("--timeout", type=number(float, 0, above=True), default=None, help="deadline per call, seconds")
    sub = p.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate", help="print the prompt and the text sampled after it")
    g.add_argument("prompt", nargs="?", default="", help="text to start from")
    g.add_argument("-n", type=number(int, 1), default=200,
                   help="tokens to generate (default 200; at most the server's max_generate_tokens, 4096 by default)")
    g.add_argument("--temperature", type=number(float, 0), default=None,
                   help="0 greedy; default 1 (the model's own distribution)")
    g.add_argument("--top-k", type=number(int, 0, UINT32), default=0, help="sample among the k most likely (0: all)")
    g.add_argument("--top-p", type=number(float, 0, 1, above=True), default=None, help="nucleus cut, (0, 1]")
    g.add_argument("--seed", type=number(int, 0, 2**64 - 1), default=None, help="same seed, same text")
    g.add_argument("--stop", action="append", help="stop after this text (repeatable)")
    g.add_argument("--session", help="continue this session (state keeps the generated text)")
    g.add_argument("--echo", action=argparse.BooleanOptionalAction, default=True,
                   help="print the prompt before the generated text (default: yes)")
    g.add_argument("-v", "--verbose", action="store_true", help="print why it stopped")
    s = sub.add_parser("stream", help="type lines, see next-token predictions after each (one session)")
    s.add_argument("--session", help="attach to an existing session instead of a new one")
    s.add_argument("--top-k", type=number(int, 0, UINT32), default=5, help="predictions to show (default 5)")
    s.add_argument("--newlines", action=argparse.BooleanOptionalAction, default=True,
                   help="feed each line's newline too (default: yes)")
    s.add_argument("--keys", action="store_true",
                   help="feed every keystroke as it is typed and show the predictions after each (a terminal only)")
    ls = sub.add_parser("sessions", help="list the server's sessions")
    ls.add_argument("--limit", type=number(int, 0, 1000), default=100, help="at most this many, 0-1000 (0: 100)")
    sub.add_parser("models", help="describe the served model")
    h = sub.add_parser("health", help="grpc.health.v1 check (exit 1 unless SERVING)")
    h.add_argument("--service", default="", help="service name ('' = whole server)")
    explain_plot.add_parser(sub)
    return p


COMMANDS = {"generate": cmd_generate, "stream": cmd_stream, "sessions": cmd_sessions,
            "models": cmd_models, "health": cmd_health, "explain": explain_plot.cmd_explain}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "generate" and not args.prompt and not args.session:
        # The server's rule (nothing to continue from), checked before any call is made.
        parser.error("generate: a prompt is required when generating without --session "
                     "(give PROMPT, or --session ID to continue a session that has consumed text)")
    try:
        root = open(args.ca, "rb").read() if args.ca else None
        cert = open(args.cert, "rb").read() if args.cert else None
        key = open(args.key, "rb").read() if args.key else None
        with Client(args.target, tls=args.tls, root_certificates=root, timeout=args.timeout, token=args.token,
                    client_certificate=cert, client_key=key) as client:
            return COMMANDS[args.command](client, args)
    except grpc.RpcError as exc:  # at a TLS server without --tls/--tls-ca, the error says so (tls_probe.py)
        error = ClientError.from_rpc_error(exc)
        print(f"lstm-client: {error} (server {args.target})", file=sys.stderr)
    except (OSError, ValueError) as exc:  # an unreadable --ca, a value the server's messages cannot carry
        print(f"lstm-client: {exc}", file=sys.stderr)
    except KeyboardInterrupt:
        return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())
