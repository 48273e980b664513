"""The Node.js example in docs/clients.md, run as written against a real server
(npm installs @grpc/grpc-js, @grpc/proto-loader and grpc-health-check into a temporary directory)."""
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ["@grpc/grpc-js", "@grpc/proto-loader", "grpc-health-check"]


def node_example() -> str:
    doc = (ROOT / "docs" / "clients.md").read_text()
    return re.search(r"<!-- node-example[^>]*-->\n```js\n(.+?)\n```", doc, flags=re.S).group(1)


@pytest.fixture(scope="module")
def node_dir(tmp_path_factory) -> Path:
    if not (shutil.which("node") and shutil.which("npm")):
        pytest.skip("node and npm are not installed")
    where = tmp_path_factory.mktemp("node")
    try:
        installed = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--loglevel=error", *PACKAGES],
                                   cwd=where, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        pytest.skip("npm install took over 300 s (no registry?)")
    if installed.returncode != 0:
        pytest.skip(f"npm could not install {' '.join(PACKAGES)}: {installed.stderr.strip().splitlines()[-1:]}")
    return where


def test_the_node_example_runs_against_a_real_server(node_dir, server):
    script = node_dir / "lstm_example.js"
    script.write_text(node_example())
    out = subprocess.run(["node", str(script), server.target, str(ROOT / "protos" / "lstm" / "v1" / "lstm.proto")],
                         cwd=node_dir, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "health SERVING"
    assert re.fullmatch(r"created [A-Za-z0-9_-]{22} steps 6", lines[1])
    assert re.fullmatch(r'predict steps 8 next( ".*" \d\.\d{3}){3}', lines[2].replace("  ", " "))
    assert lines[3].startswith("generated ")
    assert lines[4] == "stream opened at 48 steps, now 49" and lines[5] == "deleted after 49 steps"


def node_errors_example() -> str:
    doc = (ROOT / "docs" / "errors.md").read_text()
    return re.search(r"<!-- node-errors-example[^>]*-->\n```js\n(.+?)\n```", doc, flags=re.S).group(1)


def test_the_node_reconcile_example_in_errors_md_runs_against_a_real_server(node_dir, server):
    script = node_dir / "reconcile.js"
    script.write_text(node_errors_example())
    out = subprocess.run(["node", str(script), server.target, str(ROOT / "protos" / "lstm" / "v1" / "lstm.proto")],
                         cwd=node_dir, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "created once steps 6"
    assert re.fullmatch(r"read 3 replayed \d+ same in the session", lines[1]), lines[1]
    assert int(lines[1].split()[3]) >= 3
