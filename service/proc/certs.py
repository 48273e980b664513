"""Certificates for trying TLS on one machine: a private CA and a server certificate
for the names a local server is reached by, made with the openssl command line
(Debian package openssl; the service has no X.509 library of its own to depend on).

    make certs                                          # = python -m lstm_service.service.proc.certs certs
    lstm-serve --tls-cert certs/server.pem --tls-key certs/server.key
    lstm-client --tls-ca certs/ca.pem models            # the default target 127.0.0.1:50051 verifies

The server certificate names localhost, 127.0.0.1 and ::1, so the client's default
target and ``--target localhost`` both pass hostname verification; ``--name`` adds
more (a DNS name or an IP address, repeatable). ``--client NAME`` also makes
NAME.pem/NAME.key, a client certificate from the same CA for mutual TLS
(``--tls-client-ca certs/ca.pem``; a call with it acts as principal NAME).

For a machine others reach, use certificates from your real CA: this one's key sits
unencrypted beside its certificate, and it lives a year.
"""
from __future__ import annotations

import argparse
import ipaddress
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import List, Optional, Sequence

LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")
DAYS = 365


class CertError(Exception):
    pass


def _openssl(*args: str, cwd: Path) -> None:
    done = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise CertError(f"openssl {args[0]} failed: {done.stderr.strip().splitlines()[-1:] or done.returncode}")


def subject_alt_names(names: Sequence[str]) -> str:
    """``DNS:localhost,IP:127.0.0.1,...`` for openssl's subjectAltName."""
    entries = []
    for name in dict.fromkeys(names):  # in order, once each
        try:
            entries.append(f"IP:{ipaddress.ip_address(name)}")
        except ValueError:
            entries.append(f"DNS:{name}")
    return ",".join(entries)


def make_certs(directory: Path, names: Sequence[str] = (), clients: Sequence[str] = ()) -> List[Path]:
    """Write ca.pem/ca.key, server.pem/server.key (and NAME.pem/NAME.key per client) into
    ``directory``; the files written. Refuses to overwrite a CA or server key already there."""
    if shutil.which("openssl") is None:
        raise CertError("the openssl command is not installed (Debian: apt-get install openssl)")
    directory.mkdir(parents=True, exist_ok=True)
    taken = [p.name for p in (directory / "ca.key", directory / "server.key") if p.exists()]
    if taken:
        raise CertError(f"{directory} already holds {', '.join(taken)}: remove them first or pick another directory")
    written: List[Path] = []
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                 "-days", str(DAYS), "-subj", "/CN=lstm-service local CA", "-keyout", "ca.key", "-out", "ca.pem",
                 "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                 cwd=work)
        leaves = [("server", "localhost", [*LOCAL_NAMES, *names], "serverAuth")]
        leaves += [(name, name, [], "clientAuth") for name in clients]
        for stem, common_name, alt_names, usage in leaves:
            extensions = [f"extendedKeyUsage={usage}", "keyUsage=critical,digitalSignature"]
            if alt_names:
                extensions.append(f"subjectAltName={subject_alt_names(alt_names)}")
            (work / f"{stem}.ext").write_text("\n".join(extensions) + "\n")
            _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj",
                     f"/CN={common_name}", "-keyout", f"{stem}.key", "-out", f"{stem}.csr", cwd=work)
            _openssl("x509", "-req", "-in", f"{stem}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                     "-days", str(DAYS), "-extfile", f"{stem}.ext", "-out", f"{stem}.pem", cwd=work)
        for stem in ["ca", *(leaf[0] for leaf in leaves)]:
            for suffix, mode in ((".pem", 0o644), (".key", 0o600)):
                target = directory / f"{stem}{suffix}"
                target.write_bytes((work / f"{stem}{suffix}").read_bytes())
                target.chmod(mode)
                written.append(target)
    return written


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lstm_service.service.proc.certs",
                                     description="Make a local CA and a server certificate for trying TLS.")
    parser.add_argument("directory", type=Path, help="where to write ca.pem, server.pem, server.key (and ca.key)")
    parser.add_argument("--name", action="append", default=[],
                        help=f"another name the server is reached by (DNS name or IP; {', '.join(LOCAL_NAMES)} "
                             "are always in)")
    parser.add_argument("--client", action="append", default=[],
                        help="also a client certificate NAME.pem/NAME.key for mutual TLS (principal NAME)")
    args = parser.parse_args(argv)
    try:
        written = make_certs(args.directory, args.name, args.client)
    except (CertError, OSError) as exc:
        print(f"certs: {exc}", file=sys.stderr)
        return 2
    d = args.directory
    print(f"wrote {', '.join(p.name for p in written)} in {d}\n"
          f"  serve:   lstm-serve --tls-cert {d}/server.pem --tls-key {d}/server.key\n"
          f"  connect: lstm-client --tls-ca {d}/ca.pem models")
    return 0


if __name__ == "__main__":
    sys.exit(main())
