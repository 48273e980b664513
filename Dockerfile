# The CPU serving image: the gRPC service + the shipped model, no torch, no onnx,
# no compilers; runs as uid 10001. docker-compose.yml builds it as lstm-service.
#
#   deploy/wheelhouse.sh                                 # wheels, on the host (PyPI)
#   docker build -t lstm-service .                       # offline from here on
#   docker build --build-arg BASE_IMAGE=lstm-base:bookworm -t lstm-service .
#
# Works with the classic builder (Debian's docker.io has no buildx) and with
# BuildKit; no `# syntax=` line, so BuildKit needs nothing from Docker Hub.
# BASE_IMAGE: any Debian/Ubuntu-like image with python3 (3.11, to match the
# wheelhouse) and its venv module; deploy/base-image.sh builds one from
# Debian packages where no registry can be reached. The other images:
# deploy/proxy.Dockerfile (HAProxy), deploy/gpu.Dockerfile, deploy/train.Dockerfile.

ARG BASE_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------- build
# The app in its own venv, so the base's Python layout does not matter;
# every wheel from the host's wheelhouse (no index, no network): first the
# exact set of deploy/requirements.txt (a layer that stays cached while only
# our code changes), then the project's own wheel from build/project-wheel.
FROM ${BASE_IMAGE} AS build
# The classic builder keeps this stage as an untagged image (about 700 MB);
# deploy/deploy.sh removes it after the build by this label.
LABEL lstm.stage=build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY build/wheelhouse/ /wheels/
# onnxruntime-gpu is the project's dependency (one package for CPU and GPU);
# its CUDA and TensorRT provider libraries (285 MB) are loaded only when a
# session asks for those providers, which this image never does (LSTM_DEVICE
# is cpu), so they are removed; a CPU session on a tiny graph proves the
# rest of onnxruntime does not need them.
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --quiet --no-index --find-links /wheels -r /wheels/requirements.txt \
 && rm /opt/venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime_providers_cuda.so \
       /opt/venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime_providers_tensorrt.so \
 && /opt/venv/bin/python -m compileall -q /opt/venv/lib
COPY build/project-wheel/ /project/
COPY models/shakespeare/ /app/models/shakespeare/
RUN /opt/venv/bin/pip install --quiet --no-index --no-deps /project/lstm_service-*.whl \
 && /opt/venv/bin/pip check \
 && /opt/venv/bin/python -c "import importlib.util as u, sys; bad = [m for m in ('torch', 'onnx') if u.find_spec(m)]; sys.exit(f'serving image must not contain {bad}') if bad else None" \
 && /opt/venv/bin/python -c "import onnxruntime as ort; s = ort.InferenceSession('/app/models/shakespeare/model.onnx', providers=['CPUExecutionProvider']); assert s.get_providers() == ['CPUExecutionProvider']" \
 && /opt/venv/bin/python -c "import tokenizers" \
 && /opt/venv/bin/python -m compileall -q /opt/venv/lib/python3*/site-packages/lstm_service

# ---------------------------------------------------------------- runtime
FROM ${BASE_IMAGE} AS runtime
# A passwd entry for uid 10001 (no useradd: a minbase image may lack it).
RUN echo 'lstm:x:10001:10001:lstm service:/app:/usr/sbin/nologin' >> /etc/passwd \
 && echo 'lstm:x:10001:' >> /etc/group
COPY --from=build /opt/venv /opt/venv
COPY models/shakespeare/ /app/models/shakespeare/
# The word-level example (docs/models.md): LSTM_MODEL=/app/models/shakespeare-words serves it.
COPY models/shakespeare-words/ /app/models/shakespeare-words/
WORKDIR /app
# ORT_DISABLE_TELEMETRY: onnxruntime 1.31 otherwise tries to store a telemetry
# device id under $HOME (read-only here) and prints an ANSI-coloured warning
# among the JSON logs (issue 15, point 8).
# Defaults for a container; compose overrides the model path with its
# read-only mount. Every LSTM_* variable is a `lstm-serve` flag (service/proc/config.py).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    LSTM_MODEL=/app/models/shakespeare \
    LSTM_HOST=0.0.0.0 \
    LSTM_PORT=50051 \
    LSTM_METRICS_PORT=9464 \
    LSTM_DEVICE=cpu \
    LSTM_LOG_FORMAT=json \
    LSTM_GRACE=20 \
    ORT_DISABLE_TELEMETRY=1
EXPOSE 50051 9464
# The server is PID 1 (exec form, no shell): SIGTERM reaches it and it drains
# (health NOT_SERVING, new calls UNAVAILABLE, in-flight calls get LSTM_GRACE
# seconds); give the container more than that to stop (compose: 30 s).
STOPSIGNAL SIGTERM
# grpc.health.v1 through our own probe; it reads LSTM_PORT, so no arguments.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["lstm-healthcheck", "--quiet"]
# deploy/deploy.sh removes untagged images with this label (an older build that a new one
# replaced under the same tag).
LABEL lstm.stage=runtime
USER 10001:10001
ENTRYPOINT ["lstm-serve"]
