#!/usr/bin/env bash
# `make deploy-test` / `make swarm-test`: build the images and run the
# deployment on a real Docker engine on this machine.
#
#   tests/deploy/deploy_test.sh           # docker compose (tests/deploy/test_docker.py)
#   tests/deploy/deploy_test.sh swarm     # docker stack deploy on a one-node swarm (test_swarm.py)
#
# Installs docker.io and mmdebstrap if missing (Debian, root), starts dockerd
# if none runs and stops it again, builds the base images from Debian
# packages when the registry bases cannot be pulled, builds the wheelhouse
# and the images (classic builder: no buildx, no BuildKit needed), then runs
# the test. Base images, wheelhouse and image layers stay as a cache for the
# next run; every container, network and process it started is removed.
set -euo pipefail
cd "$(dirname "$0")/../.."
mode="${1:-compose}"
out=build/deploy-test
mkdir -p "$out"
PY=.venv/bin/python
times="$out/times-$mode.txt"
: > "$times"
phase() { echo "$1: $2 s" | tee -a "$times"; }
now() { date +%s; }
t0=$(now)

# ------------------------------------------------------------ tools
missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o DPkg::Lock::Timeout=300 "${missing[@]}"
fi
COMPOSE=.venv/bin/docker-compose   # Compose v2 from the [dev] extra; never Debian's v1
"$COMPOSE" version --short | grep -Eq '^v?([2-9]|[1-9][0-9])\.' \
  || { echo "deploy-test: $COMPOSE is not Compose v2 or later" >&2; exit 2; }

# ------------------------------------------------------------ engine
started_dockerd=""
swarm_before=""
cleanup() {
  status=$?
  if [ "$mode" = swarm ] && [ -z "$swarm_before" ]; then
    docker swarm leave --force >/dev/null 2>&1 || true
    docker network rm docker_gwbridge >/dev/null 2>&1 || true   # made by `swarm init`
  fi
  # Whatever a failed test left behind (the tests remove their own on success).
  ids=$(docker ps -aq --filter label=com.docker.compose.project=lstm-deploy-test 2>/dev/null || true)
  [ -z "$ids" ] || docker rm -f $ids >/dev/null 2>&1 || true
  docker network ls -q --filter label=com.docker.compose.project=lstm-deploy-test 2>/dev/null \
    | xargs -r docker network rm >/dev/null 2>&1 || true
  if [ -n "$started_dockerd" ]; then
    kill "$started_dockerd" 2>/dev/null || true
    for _ in $(seq 1 60); do kill -0 "$started_dockerd" 2>/dev/null || break; sleep 0.5; done
    echo "stopped the dockerd this run started (pid $started_dockerd)"
  fi
  exit $status
}
trap cleanup EXIT
if ! docker info >/dev/null 2>&1; then
  # No systemd here: dockerd in the background, overlay2 + bridge networking.
  dockerd >"$out/dockerd.log" 2>&1 &
  started_dockerd=$!
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
  docker info >/dev/null 2>&1 || { echo "deploy-test: dockerd did not start, see $out/dockerd.log" >&2; exit 1; }
  echo "started dockerd (pid $started_dockerd)"
fi

# A swarm this machine was already part of is left alone.
[ "$(docker info -f '{{.Swarm.LocalNodeState}}')" = active ] && swarm_before=1

# ------------------------------------------------------------ base images
t=$(now)
base() {  # $1 registry image, $2 kind for deploy/base-image.sh, $3 local tag -> the image to build FROM
  if docker image inspect "$1" >/dev/null 2>&1 || timeout 60 docker pull -q "$1" >/dev/null 2>&1; then
    echo "$1"
  else
    deploy/base-image.sh "$2" >&2
    echo "$3"
  fi
}
# Both at once: each is mostly downloads and dpkg unpacking.
base haproxy:2.6 haproxy lstm-proxy-base:bookworm > "$out/proxy-base" &
proxy_base_job=$!
export LSTM_BASE_IMAGE LSTM_PROXY_BASE_IMAGE
LSTM_BASE_IMAGE=$(base python:3.11-slim-bookworm python lstm-base:bookworm)
wait "$proxy_base_job"
LSTM_PROXY_BASE_IMAGE=$(cat "$out/proxy-base")
phase "base images ($LSTM_BASE_IMAGE, $LSTM_PROXY_BASE_IMAGE)" $(( $(now) - t ))

# ------------------------------------------------------------ wheelhouse + images
t=$(now)
deploy/wheelhouse.sh 2>"$out/wheelhouse.log" || { cat "$out/wheelhouse.log" >&2; exit 1; }
phase "wheelhouse" $(( $(now) - t ))
t=$(now)
export LSTM_IMAGE_TAG=deploy-test DOCKER_BUILDKIT=0 COMPOSE_DOCKER_CLI_BUILD=0
"$COMPOSE" --project-name lstm-deploy-test build --quiet replica proxy >"$out/build.log" 2>&1 \
  || { tail -50 "$out/build.log" >&2; exit 1; }
phase "image build (replica, proxy)" $(( $(now) - t ))
for image in lstm-service lstm-proxy; do
  echo "image $image:deploy-test: $(docker image inspect -f '{{.Size}}' $image:deploy-test | awk '{printf "%d MB", $1/1e6}')" | tee -a "$times"
done

# ------------------------------------------------------------ the test
t=$(now)
if [ "$mode" = swarm ]; then tests=tests/deploy/test_swarm.py; export LSTM_SWARM_TEST=1
else tests=tests/deploy/test_docker.py; export LSTM_DEPLOY_TEST=1; fi
"$PY" -m pytest "$tests" -q -x -s -p no:cacheprovider
phase "test ($tests)" $(( $(now) - t ))
phase "total" $(( $(now) - t0 ))
