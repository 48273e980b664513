# Retraining and export: torch 2.13.0 + the [train] extra. Not offline and
# large: on Linux x86_64 PyPI's torch bundles CUDA (several GB); for a CPU-only
# image pass --build-arg PIP_EXTRA_INDEX_URL=<the PyTorch CPU wheel index>.
#
#   docker build -f deploy/train.Dockerfile -t lstm-train .
#   mkdir -p runs && LSTM_UID=$(id -u) LSTM_GID=$(id -g) \
#     docker compose --profile train run --rm train lstm_service.model.train --help
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}
ARG TORCH_VERSION=2.13.0
ARG PIP_EXTRA_INDEX_URL
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 ORT_DISABLE_TELEMETRY=1 HOME=/tmp
WORKDIR /src
COPY pyproject.toml README.md ./
COPY lstm_service/ lstm_service/
COPY model/ model/
COPY export/ export/
COPY service/ service/
# The project itself, with the [train] extra's ranges from pyproject.toml.
# hadolint ignore=DL3013
RUN python3 -m venv /opt/venv \
 && pip install --quiet "torch==${TORCH_VERSION}" \
 && pip install --quiet ".[train]"
WORKDIR /work
USER 10001:10001
ENTRYPOINT ["python", "-m"]
CMD ["lstm_service.model.train", "--help"]
