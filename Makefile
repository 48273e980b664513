# Every target installs what it needs into .venv first, so each works on a fresh clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# torch is pinned to the CPU wheel on purpose: a looser request pulls a multi-GB CUDA build.
TORCH  := torch==2.13.0
MODEL  ?= models/shakespeare
DATA   ?= ../shared/data/tinyshakespeare.txt

.PHONY: serve test train export proto proto-check latency bench system-deps clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Serving install: no torch, no onnx (pip install . without extras).
$(VENV)/.serve-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.dev-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[train,dev,bench]'
	touch $@ $(VENV)/.serve-installed

serve: $(VENV)/.serve-installed
	$(BIN)/python -m lstm_service --model $(MODEL)

test: $(VENV)/.dev-installed system-deps
	$(BIN)/python -m pytest -q

# nginx for the deployment tests (Debian packages; needs root).
system-deps:
	@command -v nginx >/dev/null || \
	  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx; }

train: $(VENV)/.dev-installed
	$(BIN)/python -m lstm_service.model.train --data $(DATA) --out runs/shakespeare --cell lstm --layers 3 \
	  --hidden 512 --embed 64 --dropout 0.2 --batch-size 64 --seq-len 128 --epochs 40 \
	  --time-limit 85 --lr 2e-3 --eval-every 400 --threads 2

export: $(VENV)/.dev-installed
	$(BIN)/python -m lstm_service.export --checkpoint runs/shakespeare --out $(MODEL) --name shakespeare-lstm \
	  --quantize int8 --data $(DATA)

# Generated protobuf code is built from protos/ (committed; a test fails if it is stale).
proto: $(VENV)/.dev-installed
	$(BIN)/python -m lstm_service.service.build_proto

proto-check: $(VENV)/.dev-installed
	$(BIN)/python -m lstm_service.service.build_proto --check

# Single-stream step latency over gRPC vs the same step in process.
latency: $(VENV)/.serve-installed
	$(BIN)/python -m lstm_service.service.latency_probe --model $(MODEL)

# Full sweep (1/16/64/256 streams x 1/8 tokens per message) for fp32 and int8, with the
# in-process onnxruntime ceiling and a bare gRPC echo floor measured in the same run.
bench: $(VENV)/.dev-installed
	$(BIN)/python -m bench --model $(MODEL) --precision fp32,int8 --device cpu --out bench/results

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
