# The GPU serving image: the CPU image's venv plus the CUDA 13 / cuDNN 9
# libraries onnxruntime-gpu loads, from NVIDIA's pip wheels (about 3 GB).
# Needs an NVIDIA driver >= 580 on the host and the NVIDIA container toolkit.
# Not offline: the CUDA wheels come from PyPI at build time (they are not in
# the wheelhouse, which stays small for the CPU image).
#
#   docker build -f deploy/gpu.Dockerfile -t lstm-service-gpu .
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY build/wheelhouse/ /wheels/
COPY build/project-wheel/ /project/
# The pinned set from the wheelhouse and our wheel, then onnxruntime-gpu's own extras, which
# pin the CUDA/cuDNN wheels it was built against.
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --quiet --no-index --find-links /wheels -r /wheels/requirements.txt /project/lstm_service-*.whl \
 && ORT="$(/opt/venv/bin/python -c 'import importlib.metadata as m; print(m.version("onnxruntime-gpu"))')" \
 && /opt/venv/bin/pip install --quiet --find-links /wheels "onnxruntime-gpu[cuda,cudnn]==${ORT}"

FROM ${BASE_IMAGE}
RUN echo 'lstm:x:10001:10001:lstm service:/app:/usr/sbin/nologin' >> /etc/passwd \
 && echo 'lstm:x:10001:' >> /etc/group
COPY --from=build /opt/venv /opt/venv
COPY models/shakespeare/ /app/models/shakespeare/
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# Let the dynamic loader find the CUDA/cuDNN libraries inside the nvidia-*
# wheels (onnxruntime dlopens them by name; their layout varies by release).
RUN find /opt/venv/lib -path '*/nvidia/*' -name 'lib*.so*' -printf '%h\n' | sort -u > /etc/ld.so.conf.d/nvidia-wheels.conf \
 && ldconfig
WORKDIR /app
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    LSTM_MODEL=/app/models/shakespeare \
    LSTM_HOST=0.0.0.0 \
    LSTM_PORT=50051 \
    LSTM_METRICS_PORT=9464 \
    LSTM_DEVICE=cuda \
    LSTM_LOG_FORMAT=json \
    LSTM_GRACE=20 \
    ORT_DISABLE_TELEMETRY=1
EXPOSE 50051 9464
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["lstm-healthcheck", "--quiet"]
USER 10001:10001
ENTRYPOINT ["lstm-serve"]
