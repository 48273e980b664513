"""The same docker-compose.yml on Docker Swarm: deploy/stack-deploy.sh (`docker stack
deploy` of it with deploy/stack.yml on top) on a one-node swarm (images by tag,
the `deploy:` sections, overlay networks, the session key as a Swarm secret,
Redis), and the same session checks as under compose through the proxy's
published port.
`make swarm-test` builds the images, inits the swarm and leaves it after.
Skipped unless LSTM_SWARM_TEST=1.
"""
from __future__ import annotations

import contextlib
import os
import subprocess
import time

import pytest

from deploy_helpers import ROOT, free_port, serving
from docker_helpers import (assert_locked_down, check_forks, docker, held_sessions, step_sessions_concurrently,
                            wait_for)
from reference import Reference
from docker_helpers import MODEL

pytestmark = pytest.mark.skipif(os.environ.get("LSTM_SWARM_TEST") != "1",
                                reason="needs a Docker engine and the images: make swarm-test")
STACK = "lstm-swarm-test"


def tasks(service: str) -> list:
    """Running containers of a stack service on this node."""
    return docker("ps", "-q", "--filter", f"label=com.docker.swarm.service.name={STACK}_{service}").split()


def healthy(container: str) -> bool:
    return docker("inspect", "-f", "{{.State.Health.Status}}", container, check=False).strip() == "healthy"


@contextlib.contextmanager
def only_local_clients(port: int):
    """The stack publishes on every address (Swarm has no host_ip); while the
    test runs, connections to that port from anywhere but this host are dropped
    (DOCKER-USER: the chain Docker leaves to the operator)."""
    rule = ["DOCKER-USER", "-p", "tcp", "-m", "conntrack", "--ctorigdstport", str(port),
            "-m", "addrtype", "!", "--src-type", "LOCAL", "-j", "DROP"]
    subprocess.run(["iptables", "-I", *rule], check=True, capture_output=True, timeout=30)
    try:
        yield
    finally:
        subprocess.run(["iptables", "-D", *rule], capture_output=True, timeout=30)


@pytest.fixture(scope="module")
def stack():
    port = free_port()
    joined = False
    guard = only_local_clients(port)
    try:
        guard.__enter__()
        if docker("info", "-f", "{{.Swarm.LocalNodeState}}").strip() != "active":
            # The node talks to itself only: the swarm's control port on loopback.
            docker("swarm", "init", "--advertise-addr", "127.0.0.1", "--listen-addr", "127.0.0.1:2377")
            joined = True
        env = {**os.environ, "LSTM_PUBLISH_PORT": str(port)}
        start = time.monotonic()
        out = subprocess.run(["deploy/stack-deploy.sh", STACK], capture_output=True, text=True, env=env, cwd=ROOT,
                             timeout=120)
        assert out.returncode == 0, out.stderr
        print("\n" + (out.stdout + out.stderr).strip())

        def up() -> bool:
            replicas, proxy, redis = tasks("replica"), tasks("proxy"), tasks("redis")
            return (len(replicas) == 3 and len(proxy) == 1 and len(redis) == 1
                    and all(map(healthy, replicas + proxy + redis)))
        wait_for(up, 180, "the stack never had 3 healthy replicas, a healthy proxy and Redis", interval=1)
        target = f"127.0.0.1:{port}"
        wait_for(lambda: serving(target), 60, "no health answer through the published port", interval=1)
        print(f"stack deploy: healthy and serving in {time.monotonic() - start:.1f} s")
        yield target
    finally:
        docker("stack", "rm", STACK, check=False)
        try:
            wait_for(lambda: not docker("ps", "-aq", "--filter", f"label=com.docker.stack.namespace={STACK}",
                                        check=False).split(), 60, "stack containers still there", interval=1)
            docker("volume", "rm", f"{STACK}_redis-data", check=False)  # `stack rm` keeps volumes
        finally:
            if joined:
                docker("swarm", "leave", "--force", check=False)
            guard.__exit__(None, None, None)


@pytest.fixture(scope="module")
def reference():
    return Reference(MODEL)


def test_50_concurrent_sessions_through_the_swarm_proxy_match_onnxruntime(stack, reference):
    fed = step_sessions_concurrently(stack, reference, sessions=50, steps=8)
    where = {c: held_sessions(c) & set(fed) for c in tasks("replica")}
    assert sum(len(ids) for ids in where.values()) == 50, "a session is on no replica or on two"
    assert sum(1 for ids in where.values() if ids) >= 2, f"all sessions on one replica: {where}"


def test_forks_land_on_their_parents_replica_in_the_swarm(stack, reference):
    check_forks(stack, reference, count=10)


def test_swarm_tasks_are_read_only_non_root_and_without_capabilities(stack):
    for c in tasks("replica"):
        assert_locked_down(c, "lstm-serve", no_new_privileges=False)
    for c in tasks("proxy"):
        assert_locked_down(c, "haproxy", no_new_privileges=False)
    for c in tasks("redis"):
        assert_locked_down(c, "redis-server", no_new_privileges=False)
