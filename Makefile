# Every target installs what it needs into .venv first, so each works on a fresh clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# torch is pinned to the CPU wheel on purpose: a looser request pulls a multi-GB CUDA build.
TORCH  := torch==2.13.0
# The model to serve/export/bench: `make serve MODEL=models/x`, or LSTM_MODEL=models/x (the server's own variable).
MODEL  ?= $(or $(LSTM_MODEL),models/shakespeare)
DATA   ?= ../shared/data/tinyshakespeare.txt
PERF_ANALYZER := $(VENV)/perf-analyzer/bin/perf_analyzer  # Triton's load generator (perf-analyzer target)

.PHONY: lint fuzz serve test test-fronts train export train-words export-words proto proto-check latency bench bench-kserve perf-analyzer system-deps clean deploy deploy-update deploy-down deploy-test swarm-test

# setuptools' editable installs print an "Editable installation" banner (package folders
# that share the package's name); ours are mapped on purpose (pyproject.toml), so it is noise.
QUIET_EDITABLE := PYTHONWARNINGS="ignore:Editable installation"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Serving install: no torch, no onnx (pip install . without extras).
# The client (lstm-client, clients/python) is its own package; installed beside, never required by, the server.
$(VENV)/.serve-installed: pyproject.toml clients/python/pyproject.toml | $(BIN)/python
	$(QUIET_EDITABLE) $(BIN)/pip install -q -e .
	$(QUIET_EDITABLE) $(BIN)/pip install -q -e clients/python
	touch $@

$(VENV)/.dev-installed: pyproject.toml clients/python/pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q $(TORCH)
	$(QUIET_EDITABLE) $(BIN)/pip install -q -e '.[train,dev,bench]'
	$(QUIET_EDITABLE) $(BIN)/pip install -q -e clients/python
	touch $@ $(VENV)/.serve-installed

serve: $(VENV)/.serve-installed
	$(BIN)/python -m lstm_service --model $(MODEL)

# A local CA and a server certificate for localhost, 127.0.0.1 and ::1 in certs/, for trying TLS
# (docs/security.md): lstm-serve --tls-cert certs/server.pem --tls-key certs/server.key, then
# lstm-client --tls-ca certs/ca.pem. CERT_ARGS=--client carol adds a client certificate (mutual TLS).
.PHONY: certs
certs: $(VENV)/.serve-installed
	$(BIN)/python -m lstm_service.service.proc.certs certs $(CERT_ARGS)

test: $(VENV)/.dev-installed $(PERF_ANALYZER) system-deps
	$(BIN)/python -m pytest -q

# The server suites again with each side in the other mode (docs/fronts.md): servers the tests
# run in-process become a front and an engine over the real link (LSTM_TEST_FRONTS=1), and
# server processes (default: --fronts, one per core but one) run as one process (LSTM_FRONTS=0).
test-fronts: $(VENV)/.dev-installed system-deps
	LSTM_TEST_FRONTS=1 LSTM_FRONTS=0 $(BIN)/python -m pytest -q tests/service tests/client tests/fuzz

# The long fuzz run: >= 50,000 fuzzed requests (fixed seed, 2 workers each with its own server;
# several minutes), then counts of statuses, crashes and twin mismatches (docs/fuzz.md).
# `make test` runs a few hundred of them (tests/fuzz/test_fuzz_small.py).
FUZZ_CASES ?= 50000
fuzz: $(VENV)/.dev-installed
	$(BIN)/python -m tests.fuzz.run --cases $(FUZZ_CASES)
	$(BIN)/python -m tests.fuzz.run --cases $(FUZZ_CASES) --fronts 0

# Debian packages the tests start for real (HAProxy, redis-server, Chromium, libb64, openssl):
# installed when missing as root, waiting for another apt run's lock; as a non-root user it
# says what is missing and those tests skip (.ci/system-deps.sh).
system-deps:
	@bash .ci/system-deps.sh

# ruff over the repository, mypy over the serving package (settings in pyproject.toml).
lint: $(VENV)/.dev-installed
	$(BIN)/ruff check .
	$(BIN)/mypy

# The deployment (docs/deploy.md) in one command: Docker engine started if needed, Compose v2
# found or installed into .venv, base images from the registry or built from Debian packages,
# wheelhouse, session key, images, Redis + replicas + proxy up and healthy, endpoint printed.
# deploy-down: `docker compose down` (replicas drain; Redis's volume is kept). Project: .env's `lstm`.
deploy: $(VENV)/.serve-installed
	@deploy/deploy.sh up

# A new build rolled out without a pause (deploy/rollout.sh): new replicas up and healthy first,
# then the old ones drain one at a time; every session continues on the new ones.
deploy-update: $(VENV)/.serve-installed
	@deploy/deploy.sh update

deploy-down:
	@deploy/deploy.sh down

# The images built and the compose deployment run on a real Docker engine (docs/deploy.md):
# installs docker.io/mmdebstrap if missing, starts dockerd if none runs (and stops it), builds
# Debian base images when the registry's cannot be pulled. swarm-test: the same file, docker stack deploy.
deploy-test: $(VENV)/.dev-installed system-deps
	tests/deploy/deploy_test.sh compose

swarm-test: $(VENV)/.dev-installed system-deps
	tests/deploy/deploy_test.sh swarm

train: $(VENV)/.dev-installed
	$(BIN)/python -m lstm_service.model.train --data $(DATA) --out runs/shakespeare --cell lstm --layers 2 \
	  --hidden 512 --embed 64 --batch-size 64 --seq-len 128 --epochs 200 --time-limit 95 \
	  --lr 3e-3 --weight-decay 0.01 --warmup 100 --locked-dropout --dropout 0.3 --weight-drop 0.25 \
	  --ema 0.998 --eval-minutes 10 --eval-every 100000 --threads 2 --bf16

export: $(VENV)/.dev-installed
	$(BIN)/python -m lstm_service.export --checkpoint runs/shakespeare --out $(MODEL) --name shakespeare-lstm \
	  --quantize int8 --data $(DATA)

# The second shipped model: a word-level LSTM in pytorch/examples word_language_model's convention
# (examples/word_language_model), trained for 9 minutes on one core, then exported through the
# "serve your own model" path (docs/models.md) like any user's module. --no-explain keeps models/
# small (the explain graph would double it); drop it to serve Explain with this model.
WORDS_MODEL ?= models/shakespeare-words
train-words: $(VENV)/.dev-installed
	$(BIN)/python examples/word_language_model/train.py --data $(DATA) --out runs/words --minutes 9

export-words: $(VENV)/.dev-installed
	$(BIN)/python -m lstm_service.export torch --module examples/word_language_model/model.py:RNNModel \
	  --kwargs runs/words/kwargs.json --checkpoint runs/words/model.pt --vocab runs/words/vocab.txt \
	  --lowercase --split punctuation --out $(WORDS_MODEL) --name shakespeare-words --data $(DATA) --no-explain

# Generated protobuf code is built from protos/ (committed; a test fails if it is stale).
proto: $(VENV)/.dev-installed
	$(BIN)/python -m tools.build_proto

proto-check: $(VENV)/.dev-installed
	$(BIN)/python -m tools.build_proto --check

# Single-stream step latency over gRPC vs the same step in process.
latency: $(VENV)/.serve-installed
	$(BIN)/python -m tools.latency_probe --model $(MODEL)

# Full sweep (1/16/64/256 streams x 1/8 tokens per message) for fp32 and int8, with the
# in-process onnxruntime ceiling and a bare gRPC echo floor measured in the same run.
bench: $(VENV)/.dev-installed
	$(BIN)/python -m bench --model $(MODEL) --precision fp32,int8 --device cpu --out bench/results

# Triton's perf_analyzer, for the KServe v2 endpoint: the binary in the tritonclient 2.51.0 wheel (the
# newest that runs on Debian 12's glibc), and libcudart, which it loads even on CPU. Also needs Debian's
# libb64-0d (system-deps). Kept apart in .venv/perf-analyzer: that tritonclient's Python half is not used.
$(PERF_ANALYZER): | $(BIN)/python
	$(BIN)/pip install -q --no-deps --target $(VENV)/perf-analyzer tritonclient==2.51.0 nvidia-cuda-runtime-cu12==12.9.79

perf-analyzer: $(PERF_ANALYZER) system-deps

# perf_analyzer (--streaming sequences) on KServe v2 beside lstm.v1 at 1/16/64 streams, one server, same run.
bench-kserve: $(VENV)/.dev-installed perf-analyzer
	$(BIN)/python -m bench --kserve --model $(MODEL) --device cpu --out bench/results

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
