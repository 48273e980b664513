#!/usr/bin/env bash
# Build a base image from Debian packages when the registry base cannot be pulled:
#   deploy/base-image.sh python   -> lstm-base:bookworm        (python3 + venv, for the service)
#   deploy/base-image.sh haproxy  -> lstm-proxy-base:bookworm  (HAProxy 2.6, for the proxy)
#   deploy/base-image.sh redis    -> lstm-redis-base:bookworm  (redis-server 7.0, the state store)
# mmdebstrap writes a minbase bookworm root as a tarball; `docker import` loads it.
# An image that is already there is kept (delete it to rebuild). Needs root and apt's mirror.
set -euo pipefail
kind="${1:?usage: base-image.sh python|haproxy|redis}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
case "$kind" in
  python)  tag="${LSTM_BASE_TAG:-lstm-base:bookworm}";       include="python3,python3-venv,ca-certificates" ;;
  haproxy) tag="${LSTM_PROXY_BASE_TAG:-lstm-proxy-base:bookworm}"; include="haproxy,ca-certificates" ;;
  redis)   tag="${LSTM_REDIS_BASE_TAG:-lstm-redis-base:bookworm}"; include="redis-server" ;;
  *) echo "base-image.sh: unknown kind '$kind' (python, haproxy or redis)" >&2; exit 2 ;;
esac
if docker image inspect "$tag" >/dev/null 2>&1; then
  echo "base image $tag: present"; exit 0
fi
start=$(date +%s)
# Drop docs, man pages and apt lists: they only make the image bigger.
mmdebstrap --quiet --variant=minbase --include="$include" \
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
  bookworm - "$mirror" "deb ${mirror%/debian}/debian-security bookworm-security main" \
  | docker import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'CMD ["bash"]' - "$tag" >/dev/null
echo "base image $tag: built from Debian packages in $(( $(date +%s) - start )) s," \
  "$(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%d MB", $1/1e6}')"
