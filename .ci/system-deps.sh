#!/usr/bin/env bash
# Debian packages the test suite starts for real (each test skips with a reason when
# its package is missing): HAProxy (the session-affine proxy), redis-server
# (snapshots), Chromium (the explain page's browser test), libb64 (Triton's
# perf_analyzer), openssl (TLS certificates). With --docker also the Docker engine
# and mmdebstrap that `make deploy-test` needs.
#
# One `apt-get update`, only when something is missing; waits for another apt run's
# lock instead of failing; as a non-root user it lists what is missing and exits 0
# (those tests then skip), since installing needs root.
set -euo pipefail
packages=(haproxy redis-server chromium libb64-0d openssl)
[ "${1:-}" = "--docker" ] && packages+=(docker.io mmdebstrap)
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "system-deps: not root, so not installing ${missing[*]} (sudo apt-get install ${missing[*]});" \
       "the tests that need them will skip" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
lock=(-o DPkg::Lock::Timeout=600)
apt-get "${lock[@]}" update -q
apt-get "${lock[@]}" install -y -q "${missing[@]}"
