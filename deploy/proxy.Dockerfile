# The session-affine gRPC proxy: stock HAProxy 2.6 running deploy/haproxy.cfg.
# HAProxy re-resolves the replicas' DNS name and health-checks them itself,
# so there is no supervisor process: HAProxy is PID 1.
#
#   docker build -f deploy/proxy.Dockerfile -t lstm-proxy .
#   docker build -f deploy/proxy.Dockerfile --build-arg PROXY_BASE_IMAGE=lstm-proxy-base:bookworm -t lstm-proxy .
#
# PROXY_BASE_IMAGE: any image with haproxy >= 2.6 on PATH and bash (the
# official haproxy:2.6 image, or deploy/base-image.sh haproxy: Debian's 2.6.12).
ARG PROXY_BASE_IMAGE=haproxy:2.6
FROM ${PROXY_BASE_IMAGE}
COPY deploy/haproxy.cfg /etc/lstm/haproxy.cfg
# Every PROXY_* variable is read by deploy/haproxy.cfg ("${NAME}").
ENV PROXY_LISTEN=0.0.0.0:50051 \
    PROXY_HEALTH_LISTEN=0.0.0.0:8405 \
    PROXY_REPLICAS=lstm-replica:50051 \
    PROXY_SLOTS=32 \
    PROXY_DNS=127.0.0.11:53 \
    PROXY_RESOLVE_INTERVAL=1s \
    PROXY_STREAM_TIMEOUT=3600s \
    PROXY_SHUTDOWN_TIMEOUT=20s \
    PROXY_MAXCONN=4096 \
    PROXY_LOG_LEVEL=info
EXPOSE 50051 8405
# SIGUSR1: soft stop (stop listening, let open calls finish, bounded by
# PROXY_SHUTDOWN_TIMEOUT); SIGTERM would cut every call at once.
STOPSIGNAL SIGUSR1
# 200 only while at least one replica passes its check (monitor-uri in the
# config); bash's /dev/tcp, as the image has no HTTP client.
HEALTHCHECK --interval=5s --timeout=3s --start-period=10s --retries=2 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8405 && printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' >&3 && read -r _ code _ <&3 && [ \"$code\" = 200 ]"]
# deploy/deploy.sh removes untagged images with this label (an older build that a new one
# replaced under the same tag).
LABEL lstm.stage=runtime
USER 10001:10001
ENTRYPOINT ["haproxy", "-db", "-f", "/etc/lstm/haproxy.cfg"]
