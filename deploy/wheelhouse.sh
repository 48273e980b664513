#!/usr/bin/env bash
# The wheelhouse the images install from, offline: build/wheelhouse/ holds the
# wheels of deploy/requirements.txt (binary wheels only, for the image's
# CPython 3.11 on x86_64 glibc); build/project-wheel/ the project's own wheel.
#
#   deploy/wheelhouse.sh          # download what is missing, rebuild our wheel
#   deploy/wheelhouse.sh --lock   # rewrite deploy/requirements.txt from .venv first
#
# Air-gapped hosts: run this where PyPI is reachable and carry build/wheelhouse/.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
out=build/wheelhouse
if [ "${1:-}" = "--lock" ]; then
  "$PY" deploy/lock.py > deploy/requirements.txt.new && mv deploy/requirements.txt.new deploy/requirements.txt
fi
# The pins are the image's package set. A dependency added to or dropped from pyproject.toml
# without relocking is an error; newer releases in this environment than the pins are not
# (a fresh venv resolves the newest ones; the image keeps the tested, pinned set).
names() { grep -E '^[a-z0-9]' | sed 's/==.*//' | sort; }
if ! cmp -s <("$PY" deploy/lock.py | names) <(names < deploy/requirements.txt); then
  echo "wheelhouse.sh: deploy/requirements.txt does not name the packages pyproject.toml needs" \
       "(after changing dependencies: pip install -e . then deploy/wheelhouse.sh --lock)" >&2
  diff <(names < deploy/requirements.txt) <("$PY" deploy/lock.py | names) >&2 || true
  exit 2
fi
if ! "$PY" deploy/lock.py | cmp -s - deploy/requirements.txt; then
  echo "wheelhouse.sh: note: this environment has other versions than the pins; the image uses the pins:" >&2
  "$PY" deploy/lock.py | diff deploy/requirements.txt - >&2 || true
fi
mkdir -p "$out"
start=$(date +%s)
# One file per pinned requirement; skip PyPI when every one is already here (CI cache).
have_all=1
while read -r req; do
  name="${req%%==*}"; version="${req#*==}"
  ls "$out/$(echo "$name" | tr - _)-$version-"*.whl >/dev/null 2>&1 || { have_all=0; break; }
done < <(grep -E '^[a-z0-9]' deploy/requirements.txt)
if [ "$have_all" = 0 ]; then
  "$PY" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --python-version 3.11 --implementation cp --abi cp311 \
    -r deploy/requirements.txt -d "$out"
fi
cmp -s deploy/requirements.txt "$out/requirements.txt" || cp deploy/requirements.txt "$out/requirements.txt"
# The project itself (pure Python), apart: the image installs it in a layer of
# its own, so a code change does not reinstall the dependencies.
project=build/project-wheel
rm -rf "$project" && mkdir -p "$project"
# Without build isolation (no download) when this environment has the build backend pyproject.toml
# asks for; `make serve`'s venv has the setuptools its Python came with (65 on 3.11), older than
# that: then pip builds in an isolated environment with the backend fetched like the wheels above.
isolation=--no-build-isolation
"$PY" - <<'PYEOF' || isolation=""
import importlib.metadata as md, sys, tomllib
from packaging.requirements import Requirement
for spec in tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"]:
    req = Requirement(spec)
    try:
        ok = req.specifier.contains(md.version(req.name), prereleases=True)
    except md.PackageNotFoundError:
        ok = False
    if not ok:
        sys.exit(1)
PYEOF
"$PY" -m pip wheel --quiet --disable-pip-version-check --no-deps $isolation -w "$project" . >/dev/null
rm -f "$out"/lstm_service-*.whl
echo "wheelhouse $out: $(ls "$out"/*.whl | wc -l) wheels + $(ls "$project"), $(du -sm "$out" | cut -f1) MB, $(( $(date +%s) - start )) s"
