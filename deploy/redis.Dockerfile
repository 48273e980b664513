# The state store: Debian's redis-server 7.0 with the append-only file on a
# volume (/data). Every replica writes its sessions' snapshots and leases here
# (docs/durability.md), so the deployment survives any replica, and a restart
# of this container loses at most the last second of writes (appendfsync
# everysec). docker-compose.yml builds it as lstm-redis.
#
#   docker build -f deploy/redis.Dockerfile -t lstm-redis .
#   docker build -f deploy/redis.Dockerfile --build-arg REDIS_BASE_IMAGE=lstm-redis-base:bookworm -t lstm-redis .
#
# REDIS_BASE_IMAGE: any image with redis-server and redis-cli (>= 6.2) on PATH
# (the official redis:7.0-bookworm, or deploy/base-image.sh redis: Debian's 7.0.15).
ARG REDIS_BASE_IMAGE=redis:7.0-bookworm
FROM ${REDIS_BASE_IMAGE}
# A passwd entry for uid 10001 and its data folder (the volume copies the
# folder's owner the first time it is mounted).
RUN echo 'lstm:x:10001:10001:lstm state store:/data:/usr/sbin/nologin' >> /etc/passwd \
 && echo 'lstm:x:10001:' >> /etc/group \
 && mkdir -p /data && chown 10001:10001 /data
WORKDIR /data
VOLUME /data
EXPOSE 6379
# On the internal backend network only (no published port), hence no
# protected mode. No RDB dumps: the append-only file is the one copy, fsynced
# every second, rewritten by Redis itself as it grows.
HEALTHCHECK --interval=2s --timeout=2s --start-period=10s --retries=3 \
    CMD ["sh", "-c", "[ \"$(redis-cli ping)\" = PONG ]"]
# deploy/deploy.sh removes untagged images with this label (an older build that a new one
# replaced under the same tag).
LABEL lstm.stage=runtime
USER 10001:10001
# SIGTERM: Redis fsyncs the append-only file and exits.
STOPSIGNAL SIGTERM
ENTRYPOINT ["redis-server", "--bind", "0.0.0.0", "--protected-mode", "no", "--dir", "/data", \
            "--appendonly", "yes", "--appendfsync", "everysec", "--save", ""]
