"""Serving installs stay free of torch; the README's set-up commands exist."""
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_base_dependencies_have_no_training_packages():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base = " ".join(project["dependencies"]).lower()
    assert "torch" not in base and "onnx>" not in base and "onnx " not in base
    assert any(dep.startswith("torch") for dep in project["optional-dependencies"]["train"])


def test_serving_modules_never_import_torch():
    code = (
        "import sys, importlib, pkgutil\nimport lstm_service.service as service\n"
        "for m in pkgutil.iter_modules(service.__path__):\n"
        "    importlib.import_module('lstm_service.service.' + m.name)\n"
        "import lstm_service.model.card, lstm_service.model.data\n"
        "bad = sorted(n for n in sys.modules if n.split('.')[0] in ('torch', 'onnx'))\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_readme_opens_with_the_two_setup_commands():
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"^```(?:sh|bash)?\n(.+?)\n```", readme, flags=re.M | re.S)[:2]
    assert commands == ["make serve", "make test"]
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^serve:", makefile, re.M) and re.search(r"^test:", makefile, re.M)
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci


def test_make_serves_editable_installs_print_no_setuptools_banner():
    """`make serve` installs both packages editable; setuptools' "Editable installation" banner
    (about folders named like the package, which our package-dir mapping has on purpose) is quieted."""
    makefile = (ROOT / "Makefile").read_text()
    quiet = re.search(r'^QUIET_EDITABLE := PYTHONWARNINGS="([^"]+)"$', makefile, re.M)
    assert quiet, "Makefile: QUIET_EDITABLE is gone"
    serve_rule = makefile.split("$(VENV)/.serve-installed:", 1)[1].split("\n\n", 1)[0]
    assert serve_rule.count("$(QUIET_EDITABLE) $(BIN)/pip install -q -e") == 2
    env = {**os.environ, "PYTHONWARNINGS": quiet.group(1)}
    out = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "-e", str(ROOT / "clients/python")],
                         capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr
    assert "Editable installation" not in out.stdout + out.stderr
