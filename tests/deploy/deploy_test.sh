#!/usr/bin/env bash
# `make deploy-test` / `make swarm-test`: build the images and run the
# deployment on a real Docker engine on this machine.
#
#   tests/deploy/deploy_test.sh           # docker compose (tests/deploy/test_docker.py)
#   tests/deploy/deploy_test.sh swarm     # docker stack deploy on a one-node swarm (test_swarm.py)
#
# Installs docker.io and mmdebstrap if missing (Debian, root), then the steps
# of `make deploy` (deploy/deploy.sh): starts dockerd if none runs (and stops
# it again here), builds the base images from Debian packages when the
# registry bases cannot be pulled, builds the wheelhouse and the images
# (classic builder: no buildx, no BuildKit needed); then runs the test. Base images, wheelhouse and image layers stay as a cache for the
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

# ------------------------------------------------------------ engine
# The same steps as `make deploy` (deploy/deploy.sh), with this run's own output folder.
DEPLOY_OUT=$out LSTM_DEPLOY_LIB=1
source deploy/deploy.sh
COMPOSE=("$PWD/.venv/bin/docker-compose")   # Compose v2 from the [dev] extra; never Debian's v1
compose_ok "${COMPOSE[@]}" || { echo "deploy-test: ${COMPOSE[*]} is not Compose v2.24 or later" >&2; exit 2; }
swarm_before=""
cleanup() {
  status=$?
  if [ "$mode" = swarm ] && [ -z "$swarm_before" ]; then
    docker swarm leave --force >/dev/null 2>&1 || true
    docker network rm docker_gwbridge >/dev/null 2>&1 || true   # made by `swarm init`
  fi
  # Whatever a failed test left behind (the tests remove their own on success).
  for project in lstm-deploy-test lstm-deploy-test-train; do
    ids=$(docker ps -aq --filter label=com.docker.compose.project=$project 2>/dev/null || true)
    [ -z "$ids" ] || docker rm -f $ids >/dev/null 2>&1 || true
    docker network ls -q --filter label=com.docker.compose.project=$project 2>/dev/null \
      | xargs -r docker network rm >/dev/null 2>&1 || true
    docker volume ls -q --filter label=com.docker.compose.project=$project 2>/dev/null \
      | xargs -r docker volume rm >/dev/null 2>&1 || true
  done
  if [ -n "$STARTED_DOCKERD" ]; then
    kill "$STARTED_DOCKERD" 2>/dev/null || true
    for _ in $(seq 1 60); do kill -0 "$STARTED_DOCKERD" 2>/dev/null || break; sleep 0.5; done
    echo "stopped the dockerd this run started (pid $STARTED_DOCKERD)"
  fi
  exit $status
}
trap cleanup EXIT
ensure_engine
[ -z "$STARTED_DOCKERD" ] || echo "started dockerd (pid $STARTED_DOCKERD)"

# A swarm this machine was already part of is left alone.
[ "$(docker info -f '{{.Swarm.LocalNodeState}}')" = active ] && swarm_before=1

# ------------------------------------------------------------ base images
t=$(now)
base_images
phase "base images ($LSTM_BASE_IMAGE, $LSTM_PROXY_BASE_IMAGE, $LSTM_REDIS_BASE_IMAGE)" $(( $(now) - t ))

# ------------------------------------------------------------ wheelhouse + images
# Built once and shared by every test of the run: the rolling update makes its "new" image
# from this one (a layer on top), so nothing is built twice.
t=$(now)
session_key
export LSTM_IMAGE_TAG=deploy-test
build_images --project-name lstm-deploy-test
phase "wheelhouse + image build (redis, replica, proxy)" $(( $(now) - t ))
for image in lstm-service lstm-proxy lstm-redis; do
  echo "image $image:deploy-test: $(docker image inspect -f '{{.Size}}' $image:deploy-test | awk '{printf "%d MB", $1/1e6}')" | tee -a "$times"
done
untagged=$(docker images -q --filter dangling=true --filter label=lstm.stage | wc -l)
[ "$untagged" = 0 ] || { echo "deploy-test: the build left $untagged untagged image(s)" >&2; exit 1; }

# ------------------------------------------------------------ the test
t=$(now)
if [ "$mode" = swarm ]; then tests=tests/deploy/test_swarm.py; export LSTM_SWARM_TEST=1
else tests=tests/deploy/test_docker.py; export LSTM_DEPLOY_TEST=1; fi
"$PY" -m pytest "$tests" -q -x -s -p no:cacheprovider
phase "test ($tests)" $(( $(now) - t ))
phase "total" $(( $(now) - t0 ))
