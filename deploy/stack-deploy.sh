#!/usr/bin/env bash
# Deploy (or update) the stack on Docker Swarm: docker-compose.yml with
# deploy/stack.yml on top. Run it again with a new LSTM_IMAGE_TAG for a rolling update.
#
#   deploy/stack-deploy.sh [STACK]        # default stack name: lstm
#
# docker-compose.yml has no `version:` (Compose v2 warns about one), but the
# 20.10 docker CLI's stack loader needs one, the same in every file: it is
# given here, on the way in (the file is read from stdin; paths stay relative
# to this folder, which is the working directory).
set -euo pipefail
cd "$(dirname "$0")/.."
stack="${1:-lstm}"
version=$(sed -n 's/^version: *"\(.*\)"$/\1/p' deploy/stack.yml)
{ echo "version: \"$version\""; cat docker-compose.yml; } \
  | docker stack deploy --compose-file - --compose-file deploy/stack.yml "$stack"
