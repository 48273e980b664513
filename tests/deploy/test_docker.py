"""The compose deployment on a real Docker engine, from the host through the
published proxy port (`make deploy-test` builds the images and runs this).

3 replicas + HAProxy come up healthy; 50 sessions stepping at once match an
in-process onnxruntime replay bit for bit; forks reach their parent's replica;
`--scale replica=4` is followed by the proxy alone; `docker kill` of a replica
costs only its own sessions; the containers are read-only, non-root and
without capabilities at run time; `docker compose down` drains and ends
cleanly. Skipped unless LSTM_DEPLOY_TEST=1 (the images must exist).
"""
from __future__ import annotations

import os
import time

import grpc
import pytest

from deploy_helpers import free_port, serving
from docker_helpers import (MODEL, active_sessions, assert_locked_down, check_forks, continue_sessions, docker,
                            exec_in, held_sessions, inspect, logs, step_sessions_concurrently, wait_for)
from docker_tools import compose_v2
from lstm_client import Client, ClientError
from reference import Reference

pytestmark = pytest.mark.skipif(os.environ.get("LSTM_DEPLOY_TEST") != "1",
                                reason="needs a Docker engine and the images: make deploy-test")
PROJECT = "lstm-deploy-test"
PROXY_HEALTH = ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8405 && printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' >&3 "
                "&& read -r _ code _ <&3 && [ \"$code\" = 200 ]"]


class Deployment:
    def __init__(self) -> None:
        self.port = free_port()
        self.cmd = compose_v2() + ["--project-name", PROJECT, "--file", "docker-compose.yml",
                                   "--file", "tests/deploy/compose.loopback.yml"]  # publish on 127.0.0.1 only
        self.env = {**os.environ, "LSTM_PUBLISH_PORT": str(self.port)}
        self.target = f"127.0.0.1:{self.port}"

    def compose(self, *args: str, timeout: float = 300) -> str:
        import subprocess

        out = subprocess.run(self.cmd + list(args), capture_output=True, text=True, env=self.env,
                             timeout=timeout, cwd=MODEL.parents[1])
        assert out.returncode == 0, f"compose {' '.join(args)}: {out.stderr[-3000:]}"
        return out.stdout

    def containers(self, service: str) -> list:
        return sorted(self.compose("ps", "--quiet", service).split())


@pytest.fixture(scope="module")
def deployment():
    d = Deployment()
    try:
        start = time.monotonic()
        d.compose("up", "--detach", "--wait", "--no-build")
        print(f"\ncompose up: 3 replicas + proxy healthy in {time.monotonic() - start:.1f} s")
        yield d
    finally:
        start = time.monotonic()
        d.compose("down", "--volumes", "--remove-orphans", "--timeout", "30")
        print(f"compose down in {time.monotonic() - start:.1f} s")


@pytest.fixture(scope="module")
def reference():
    return Reference(MODEL)


def test_containers_are_read_only_non_root_and_without_capabilities(deployment):
    replicas = deployment.containers("replica")
    assert len(replicas) == 3
    for c in replicas:
        assert_locked_down(c, "lstm-serve")
        assert inspect(c)["State"]["Health"]["Status"] == "healthy"
        text = logs(c)
        assert '"event": "started"' in text and "\x1b[" not in text, f"{c}: ANSI escapes among the JSON logs"
    (proxy,) = deployment.containers("proxy")
    assert_locked_down(proxy, "haproxy")


def test_50_concurrent_sessions_through_the_proxy_match_onnxruntime(deployment, reference):
    fed = step_sessions_concurrently(deployment.target, reference, sessions=50, steps=8)
    assert len(fed) == 50
    where = {c: held_sessions(c) & set(fed) for c in deployment.containers("replica")}
    assert sum(len(ids) for ids in where.values()) == 50, "a session is on no replica or on two"
    assert sum(1 for ids in where.values() if ids) >= 2, f"all sessions on one replica: {where}"
    for c, ids in where.items():
        assert active_sessions(c) >= len(ids)


def test_forks_land_on_their_parents_replica(deployment, reference):
    check_forks(deployment.target, reference, count=10)


def test_scaling_to_4_is_followed_by_the_proxy_alone(deployment, reference):
    with Client(deployment.target, timeout=30) as client:
        fed = {client.create_session("ab").session.id: b"ab" for _ in range(40)}
    before = deployment.containers("replica")
    start = time.monotonic()
    deployment.compose("up", "--detach", "--wait", "--no-build", "--scale", "replica=4")
    up = time.monotonic() - start
    after = deployment.containers("replica")
    assert len(after) == 4 and set(before) < set(after), "scaling recreated running replicas"
    (new,) = set(after) - set(before)

    with Client(deployment.target, timeout=30) as client:
        def routed() -> bool:
            client.create_session("x")
            return active_sessions(new) > 0
        followed = wait_for(routed, 30, "the proxy never sent a session to the new replica", interval=0.5)
    outcome = continue_sessions(deployment.target, reference, fed)
    moved = sum(1 for v in outcome.values() if v != "ok")
    print(f"scale 3 -> 4: healthy in {up:.1f} s, proxy routed to it {followed:.1f} s later; "
          f"{moved} of {len(fed)} sessions moved (NOT_FOUND without snapshots)")
    assert all(v in ("ok", "NOT_FOUND") for v in outcome.values()), outcome
    assert moved < len(fed) // 2


def test_killing_a_replica_costs_only_its_own_sessions(deployment, reference):
    fed = step_sessions_concurrently(deployment.target, reference, sessions=20, steps=3)
    where = {c: held_sessions(c) & set(fed) for c in deployment.containers("replica")}
    victim = max(where, key=lambda c: len(where[c]))
    assert 0 < len(where[victim]) < len(fed)
    docker("kill", victim)
    wait_for(lambda: not inspect(victim)["State"]["Running"] or inspect(victim)["RestartCount"] > 0, 10,
             "the killed replica still runs")
    probe = next(iter(where[victim]))

    def slot_taken_out() -> bool:
        """The proxy's check (inter 1s, fall 2) has taken the dead slot out: the victim's session is
        hashed to a live replica, which does not hold it (NOT_FOUND), not to the dead one (UNAVAILABLE)."""
        with Client(deployment.target, timeout=10) as client:
            try:
                client.get_session(probe)
            except ClientError as exc:
                return exc.code() == grpc.StatusCode.NOT_FOUND
        raise AssertionError(f"the killed replica's session {probe[:8]} answered")

    wait_for(slot_taken_out, 15, "the proxy still routes the killed replica's sessions to its slot")
    for round_ in range(2):  # twice: a dead replica keeps failing cleanly, never answers wrongly
        outcome = continue_sessions(deployment.target, reference, fed)
        for sid, result in outcome.items():
            if sid in where[victim]:
                assert result != "ok", f"a session of the killed replica answered (round {round_})"
            else:
                assert result == "ok", f"session {sid[:8]} on a surviving replica: {result} (round {round_})"
    assert serving(deployment.target)
    check_forks(deployment.target, reference, count=3)


def test_compose_stop_drains_every_replica_and_the_proxy_turns_unhealthy(deployment):
    replicas = [c for c in deployment.containers("replica") if inspect(c)["State"]["Running"]]
    assert len(replicas) >= 3
    (proxy,) = deployment.containers("proxy")
    start = time.monotonic()
    deployment.compose("stop", "--timeout", "30", "replica")
    took = time.monotonic() - start
    for c in replicas:
        state = inspect(c)["State"]
        text = logs(c)
        assert state["ExitCode"] == 0 and not state["OOMKilled"], f"{c}: exit {state['ExitCode']}"
        assert '"event": "draining"' in text and '"event": "stopped"' in text, f"{c}: SIGTERM never reached PID 1"
    print(f"compose stop replica ({len(replicas)} running, drained, exit 0): {took:.1f} s")
    wait_for(lambda: exec_in(proxy, *PROXY_HEALTH).returncode != 0, 10,
             "the proxy still reports healthy with every replica stopped")


def test_train_mounts_are_never_created_as_root(tmp_path):
    """deploy/compose.train.yml: a missing ./runs is an error (no root-owned folder
    appears), and the training user writes files the caller owns. The serving
    image stands in for the (multi-GB) train image: only the mounts are tested."""
    import shutil
    import subprocess

    (tmp_path / "deploy").mkdir()
    shutil.copy(MODEL.parents[1] / "docker-compose.yml", tmp_path)
    shutil.copy(MODEL.parents[1] / "deploy" / "compose.train.yml", tmp_path / "deploy")
    (tmp_path / "data").mkdir()
    tag = os.environ.get("LSTM_IMAGE_TAG", "latest")
    docker("tag", f"lstm-service:{tag}", f"lstm-train:{tag}-mounts")
    cmd = compose_v2() + ["--project-name", f"{PROJECT}-train", "-f", "docker-compose.yml", "-f",
                          "deploy/compose.train.yml", "run", "--rm", "--no-deps", "--entrypoint", "touch", "train",
                          "/work/runs/written"]
    env = {**os.environ, "LSTM_IMAGE_TAG": f"{tag}-mounts", "LSTM_DATA_DIR": str(tmp_path / "data"),
           "LSTM_UID": "12345", "LSTM_GID": "12345"}
    try:
        missing = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert missing.returncode != 0 and not (tmp_path / "runs").exists(), missing.stderr
        (tmp_path / "runs").mkdir(mode=0o777)
        (tmp_path / "runs").chmod(0o777)
        (tmp_path / "models").mkdir()
        ran = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert ran.returncode == 0, ran.stderr
        assert (tmp_path / "runs" / "written").stat().st_uid == 12345
    finally:
        subprocess.run(compose_v2() + ["--project-name", f"{PROJECT}-train", "-f", "docker-compose.yml", "-f",
                                       "deploy/compose.train.yml", "down", "--remove-orphans"],
                       cwd=tmp_path, env=env, capture_output=True, timeout=120)
        docker("rmi", f"lstm-train:{tag}-mounts", check=False)
