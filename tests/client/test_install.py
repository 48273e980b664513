"""The client package installs and works alone: its wheel requires only gRPC and protobuf
packages, and in a fresh virtual environment that holds nothing but those (no onnxruntime,
numpy, torch or the server package) it installs, passes ``pip check`` and talks to a server."""
from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from importlib.metadata import distribution
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ALLOWED = {"grpcio", "protobuf", "grpcio-health-checking", "grpcio-status"}
SERVER_ONLY = ("onnxruntime", "numpy", "torch", "lstm_service")


def requirement_names(requires) -> set:
    """Distribution names in Requires-Dist lines, leaving out those only an extra asks for."""
    return {re.split(r"[\s<>=!~;\[(]", r, maxsplit=1)[0].lower().replace("_", "-")
            for r in requires or () if "extra ==" not in r}


def closure(names: set) -> set:
    """These distributions and everything they require, as installed in this environment."""
    seen, todo = set(), list(names)
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += requirement_names(distribution(name).requires)
    return seen


def link_installed(names: set, into: Path) -> None:
    """Make exactly these installed distributions importable from ``into`` (links to their files)."""
    into.mkdir()
    for name in names:
        for top in {f.parts[0] for f in distribution(name).files if f.parts[0] not in ("..", "bin")}:
            source = Path(distribution(name).locate_file(top))
            if source.exists() and not (into / top).exists():
                (into / top).symlink_to(source)


def test_the_client_wheel_installs_and_runs_without_the_server(tmp_path, server):
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                            "-w", str(tmp_path), str(ROOT / "clients" / "python")], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    wheel = next(tmp_path.glob("lstm_client-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        metadata = next(zf.read(n).decode() for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        tops = {n.split("/")[0] for n in zf.namelist() if not n.split("/")[0].endswith(".dist-info")}
    requires = requirement_names(re.findall(r"^Requires-Dist: (.+)$", metadata, flags=re.M))
    assert requires == ALLOWED and tops == {"lstm_client"}
    needed = closure(requires)
    assert not any(n.startswith(SERVER_ONLY) for n in needed), needed

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next(venv.glob("lib/python*/site-packages"))
    link_installed(needed, tmp_path / "deps")
    (site / "deps.pth").write_text(str(tmp_path / "deps") + "\n")
    python = str(venv / "bin" / "python")
    pip = [sys.executable, "-m", "pip", "--python", python]
    installed = subprocess.run([*pip, "install", "-q", "--no-deps", "--no-index", str(wheel)],
                               capture_output=True, text=True)
    assert installed.returncode == 0, installed.stderr
    checked = subprocess.run([*pip, "check"], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr  # every requirement met by `needed` alone

    probe = ("import importlib.util as u, lstm_client; "
             f"print([m for m in {SERVER_ONLY!r} if u.find_spec(m)], lstm_client.__file__)")
    found = subprocess.run([python, "-c", probe], capture_output=True, text=True, cwd=tmp_path)
    assert found.returncode == 0, found.stderr
    assert found.stdout.startswith("[] ") and str(site) in found.stdout
    out = subprocess.run([str(venv / "bin" / "lstm-client"), "--target", server.target, "generate", "ROMEO:",
                          "-n", "5", "--seed", "1"], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert out.returncode == 0 and out.stdout.startswith("ROMEO:"), out.stderr
