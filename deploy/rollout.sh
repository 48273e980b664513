#!/usr/bin/env bash
# Rolling update of the replicas under compose, keeping the deployment's capacity: set what
# changed (a new LSTM_IMAGE_TAG, LSTM_MODEL_DIR, a setting) in the environment or .env, then
#
#   deploy/rollout.sh [compose options]      # e.g. LSTM_IMAGE_TAG=v2 deploy/rollout.sh (`make deploy-update`)
#
# Compose itself has no rolling update: `docker compose up -d` with a new image stops every
# old replica at once (they drain, no session is lost, but calls wait until the new ones are
# healthy, several seconds). Here: as many new replicas as run now are started beside the old
# ones and waited for (healthy); then the old ones are stopped one at a time. Each drains
# (SIGTERM: every session written to Redis, its lease released) and the replicas that are up
# take its sessions up on their next call. Swarm does the same by itself (deploy/stack.yml).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${COMPOSE:-}" ]; then
  if docker compose version >/dev/null 2>&1; then COMPOSE="docker compose"; else COMPOSE=.venv/bin/docker-compose; fi
fi
compose() { $COMPOSE "$@"; }
old=$(compose "${@}" ps --quiet replica)
count=$(echo "$old" | grep -c . || true)
[ "$count" -gt 0 ] || { echo "rollout: no replica running (make deploy first)" >&2; exit 1; }
echo "rollout: starting $count new replica(s) beside the $count running"
compose "${@}" up --detach --wait --no-build --no-deps --no-recreate --scale "replica=$((2 * count))" replica
for id in $old; do
  # docker stop: SIGTERM, the replica drains; its stop grace (compose: 30 s) bounds it.
  docker stop --time 30 "$id" >/dev/null && docker rm "$id" >/dev/null
  echo "rollout: replaced ${id:0:12}"
done
# Compose now counts only the new ones; this leaves them as they are.
compose "${@}" up --detach --wait --no-build --no-deps --no-recreate --scale "replica=$count" replica
# The image the old replicas ran, untagged by the build and in use until now (deploy/deploy.sh).
docker image prune --force --filter label=lstm.stage >/dev/null
echo "rollout: $count replica(s) on the new configuration"
