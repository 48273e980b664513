# syntax=docker/dockerfile:1
# Images of the LSTM inference service; docker-compose.yml builds the first three.
#
#   runtime      (default) the gRPC service + the shipped model; CPU provider.
#                No torch, no onnx, no compilers; runs as uid 10001.
#   runtime-gpu  runtime + the CUDA 13 / cuDNN 9 libraries onnxruntime-gpu
#                loads, from NVIDIA's pip wheels; needs an NVIDIA driver >= 580
#                on the host and the NVIDIA container toolkit (README.md, Deploy).
#   proxy        Debian's nginx 1.22 + deploy/proxy.py: the session-affine gRPC
#                proxy, the same nginx build the topology test runs.
#   train        torch 2.13.0 + the [train] extra, to retrain and export a model.
#
#   docker build -t lstm-service .                       # runtime
#   docker build --target runtime-gpu -t lstm-service:gpu .
#   docker build --target train -t lstm-train .

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------- base
FROM ${PYTHON_IMAGE} AS base
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN groupadd --system --gid 10001 lstm \
 && useradd --system --uid 10001 --gid lstm --home-dir /app --no-create-home --shell /usr/sbin/nologin lstm

# ---------------------------------------------------------------- build
# `pip install .` without extras into a venv: the serving dependencies only.
# Every dependency comes as a binary wheel; the slim base has no compiler,
# so a dependency that needed one would fail the build here, not ship.
FROM base AS build
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY model/ model/
COPY export/ export/
COPY service/ service/
RUN pip install . \
 && python -c "import importlib.util as u, sys; bad = [m for m in ('torch', 'onnx') if u.find_spec(m)]; sys.exit(f'serving image must not contain {bad}') if bad else None"

# onnxruntime-gpu's own extras pin the CUDA/cuDNN wheels it was built against.
FROM build AS build-gpu
RUN ORT="$(python -c 'import importlib.metadata as m; print(m.version("onnxruntime-gpu"))')" \
 && pip install "onnxruntime-gpu[cuda,cudnn]==${ORT}"

# ---------------------------------------------------------------- serving
FROM base AS serve
WORKDIR /app
COPY models/shakespeare/ /app/models/shakespeare/
# Defaults for a container; compose overrides the model path with its
# read-only mount. Every variable is a `python -m lstm_service` flag (service/config.py).
ENV PATH=/opt/venv/bin:$PATH \
    LSTM_MODEL=/app/models/shakespeare \
    LSTM_HOST=0.0.0.0 \
    LSTM_PORT=50051 \
    LSTM_METRICS_PORT=9464 \
    LSTM_LOG_FORMAT=json \
    LSTM_GRACE=20
EXPOSE 50051 9464
# SIGTERM: health goes NOT_SERVING, new calls get UNAVAILABLE, in-flight calls
# get LSTM_GRACE seconds; give the container more than that to stop
# (compose: stop_grace_period 30s; docker run: --stop-timeout 30).
STOPSIGNAL SIGTERM
# grpc.health.v1 through our own probe; it reads LSTM_PORT, so no arguments.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-m", "lstm_service.service.healthcheck", "--quiet"]
ENTRYPOINT ["python", "-m", "lstm_service"]

FROM serve AS runtime-gpu
COPY --from=build-gpu /opt/venv /opt/venv
# Let the dynamic loader find the CUDA/cuDNN libraries inside the nvidia-* wheels
# (onnxruntime dlopens them by name; their directory layout varies by release).
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN find /opt/venv/lib -path '*/nvidia/*' -name 'lib*.so*' -printf '%h\n' | sort -u > /etc/ld.so.conf.d/nvidia-wheels.conf \
 && ldconfig \
 && ldconfig -p | grep -q 'libcudart.so' \
 && ldconfig -p | grep -q 'libcublasLt.so' \
 && ldconfig -p | grep -q 'libcudnn.so'
ENV LSTM_DEVICE=cuda
USER 10001:10001

# ---------------------------------------------------------------- proxy
FROM base AS proxy
# bookworm's nginx (1.22.1): open-source, with the HTTP/2 and gRPC modules.
RUN apt-get update \
 && apt-get install -y --no-install-recommends nginx=1.22.* \
 && rm -rf /var/lib/apt/lists/* /etc/nginx/sites-enabled/default
COPY deploy/nginx.conf.template deploy/proxy.py /opt/proxy/
ENV PROXY_UPSTREAM=lstm-replica:50051 \
    PROXY_LISTEN=0.0.0.0:50051 \
    PROXY_PREFIX=/tmp/nginx
EXPOSE 50051
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "/opt/proxy/proxy.py", "check"]
USER 10001:10001
ENTRYPOINT ["python", "/opt/proxy/proxy.py", "run"]

# ---------------------------------------------------------------- train
# For retraining and export: torch pinned like the Makefile. On Linux x86_64
# the PyPI wheel of torch bundles CUDA (several GB); for a CPU-only image pass
#   --build-arg PIP_EXTRA_INDEX_URL=<the PyTorch CPU wheel index>
# docker compose run --rm train model.train --help   (see docker-compose.yml)
FROM base AS train
ARG TORCH_VERSION=2.13.0
ARG PIP_EXTRA_INDEX_URL
WORKDIR /work
COPY pyproject.toml README.md ./
COPY model/ model/
COPY export/ export/
COPY service/ service/
# The project itself, with the [train] extra's ranges from pyproject.toml (DL3013).
# hadolint ignore=DL3013
RUN pip install "torch==${TORCH_VERSION}" \
 && pip install ".[train]"
USER 10001:10001
ENTRYPOINT ["python", "-m"]
CMD ["model.train", "--help"]

# ---------------------------------------------------------------- runtime (default target: last)
FROM serve AS runtime
COPY --from=build /opt/venv /opt/venv
USER 10001:10001
