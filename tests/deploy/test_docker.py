"""The compose deployment on a real Docker engine, from the host through the
published proxy port (`make deploy-test` builds the images and runs this).

Redis + 3 replicas (write-through, LSTM_SNAPSHOT_EVERY=1) + HAProxy come up
healthy; 50 sessions stepping at once match an in-process onnxruntime run;
forks reach their parent's replica. Then, while 50 sessions keep stepping
(tests/deploy/session_load.py: each step sent with expected_steps and resent
after a lost reply, as a client does): scale 3 -> 5 -> 2, `docker kill` of a
replica, and a rolling update to a new image — no session is ever NOT_FOUND
or lost, and every acknowledged reply is bitwise the one a replay of the
session's steps gives. tritonclient's KServe sequences, which carry no
`x-session-id`, work through the proxy. The containers are read-only,
non-root and without capabilities; `compose stop` drains every replica.
Skipped unless LSTM_DEPLOY_TEST=1 (the images must exist).
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import time

import numpy as np
import pytest

from deploy_helpers import free_port
from docker_helpers import (MODEL, active_sessions, assert_locked_down, check_forks, docker, exec_in, held_sessions,
                            inspect, logs, step_sessions_concurrently, wait_for)
from docker_tools import compose_v2
from reference import Reference
from session_load import SessionLoad, assert_none_lost, check_against_replay

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

    def compose(self, *args: str, timeout: float = 300, env: dict = None) -> str:
        out = subprocess.run(self.cmd + list(args), capture_output=True, text=True, env={**self.env, **(env or {})},
                             timeout=timeout, cwd=MODEL.parents[1])
        assert out.returncode == 0, f"compose {' '.join(args)}: {out.stderr[-3000:]}"
        # Every compose command is quiet: no warning about keys it ignores (docs/deploy.md).
        assert "level=warning" not in out.stderr and "WARN" not in out.stderr, out.stderr
        return out.stdout

    def containers(self, service: str) -> list:
        return sorted(self.compose("ps", "--quiet", service).split())

    def running(self, service: str) -> list:
        return [c for c in self.containers(service) if inspect(c)["State"]["Running"]]


@pytest.fixture(scope="module")
def deployment():
    d = Deployment()
    try:
        start = time.monotonic()
        d.compose("up", "--detach", "--wait", "--no-build")
        print(f"\ncompose up: Redis + 3 replicas + proxy healthy in {time.monotonic() - start:.1f} s")
        yield d
    finally:
        # Every container's log, for a failed run (the containers go with `down`).
        logs_out = MODEL.parents[1] / "build" / "deploy-test" / "compose-logs.txt"
        logs_out.parent.mkdir(parents=True, exist_ok=True)
        logs_out.write_text(subprocess.run(d.cmd + ["logs", "--no-color", "--timestamps"], capture_output=True,
                                           text=True, env=d.env, timeout=120, cwd=MODEL.parents[1]).stdout)
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
    (redis,) = deployment.containers("redis")
    assert_locked_down(redis, "redis-server")
    assert inspect(redis)["State"]["Health"]["Status"] == "healthy"
    assert exec_in(redis, "redis-cli", "config", "get", "appendonly").stdout.split() == ["appendonly", "yes"]
    mounts = {m["Destination"]: m for m in inspect(redis)["Mounts"]}
    assert mounts["/data"]["Type"] == "volume", "the append-only file must be on a volume"
    for c in replicas:  # the session key arrives as a secret, readable by the server's uid only through its mount
        key = exec_in(c, "python", "-c", "print(len(open('/run/secrets/session_key','rb').read()))")
        assert key.returncode == 0 and int(key.stdout) >= 32, key


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


def replay_check(deployment, load, what: str) -> str:
    """No session lost, every acknowledged reply bitwise the replay's: a one-line summary."""
    histories = load.stop()
    counts = assert_none_lost(histories)
    compared = check_against_replay(deployment.target, histories)
    return (f"{what}: {len(histories)} sessions, {counts['steps']} calls, 0 lost, {compared} replies bitwise equal "
            f"to a replay; {counts['resends']} resends, {counts['applied_unseen']} applied with the reply lost")


def test_scale_3_to_5_to_2_while_50_sessions_step(deployment):
    with SessionLoad(deployment.target, sessions=50, max_steps=1000, pace=0.2, prefix="scale") as load:
        scale_under(deployment, load)
    deployment.compose("up", "--detach", "--wait", "--no-build", "--scale", "replica=3")


def scale_under(deployment, load) -> None:
    load.wait_steps(3)
    load.longest_wait()
    start = time.monotonic()
    deployment.compose("up", "--detach", "--wait", "--no-build", "--scale", "replica=5")
    up5, up5_wait = time.monotonic() - start, load.longest_wait()
    assert len(deployment.running("replica")) == 5
    load.wait_steps(3)
    load.longest_wait()
    start = time.monotonic()
    deployment.compose("up", "--detach", "--wait", "--no-build", "--scale", "replica=2")  # 3 drain and stop
    down2, down2_wait = time.monotonic() - start, load.longest_wait()
    assert len(deployment.running("replica")) == 2
    load.wait_steps(3)
    summary = replay_check(deployment, load, "scale 3 -> 5 -> 2")
    print(f"{summary}; up to 5 healthy in {up5:.1f} s (longest wait of a call meanwhile {up5_wait:.2f} s), "
          f"down to 2 in {down2:.1f} s (longest wait {down2_wait:.2f} s)")


def test_docker_kill_of_a_replica_its_sessions_resume_elsewhere_at_their_last_step(deployment):
    with SessionLoad(deployment.target, sessions=30, max_steps=1000, pace=0.1, prefix="kill") as load:
        kill_under(deployment, load)
    deployment.compose("up", "--detach", "--wait", "--no-build", "--scale", "replica=3")  # the killed one back


def kill_under(deployment, load) -> None:
    load.wait_steps(3)
    where = {c: held_sessions(c) for c in deployment.running("replica")}
    victim = max(where, key=lambda c: len(where[c] & {h.session_id for h in load.histories}))
    theirs = where[victim] & {h.session_id for h in load.histories}
    assert theirs, f"no session on any replica: {where}"
    issued = time.monotonic()
    docker("kill", victim)  # returns once the container is dead (SIGKILL to its PID 1 and every process)
    returned = load.mark()  # from here, no answer can come from the victim
    load.wait_steps(3)
    # Each of the victim's sessions: seconds from the kill to its next answered call, on another replica.
    failover = sorted(load.first_ok_after[s] for s in theirs)
    summary = replay_check(deployment, load, "docker kill")
    print(f"{summary}; the {len(theirs)} sessions of the killed replica answered again after "
          f"median {statistics.median(failover):.2f} s, max {failover[-1]:.2f} s after `docker kill` returned "
          f"(it took {returned - issued:.2f} s: the failover time lies between the two)")


def test_rolling_updates_under_load_lose_no_session(deployment):
    """Two updates while 30 sessions step: deploy/rollout.sh to a new image (new replicas healthy
    first, then the old ones drain one at a time), and back with plain `docker compose up -d`
    (every old replica drains at once; calls wait until the new ones are up). Each drained
    replica writes every session and releases its lease; no session is lost either way."""
    tag = os.environ.get("LSTM_IMAGE_TAG", "latest")
    new = f"{tag}-rollout"
    # A new image without a rebuild: the same one with a layer on top.
    built = subprocess.run(["docker", "build", "--quiet", "--tag", f"lstm-service:{new}", "-"],
                           input=f"FROM lstm-service:{tag}\nLABEL lstm.rollout={new}\n", capture_output=True,
                           text=True, timeout=120)
    assert built.returncode == 0, built.stderr
    before = set(deployment.running("replica"))
    load = SessionLoad(deployment.target, sessions=30, max_steps=1000, pace=0.2, prefix="update").start()
    try:
        load.wait_steps(3)
        load.longest_wait()
        start = time.monotonic()
        options = deployment.cmd[len(compose_v2()):]
        out = subprocess.run(["deploy/rollout.sh", *options], capture_output=True, text=True, timeout=300,
                             cwd=MODEL.parents[1], env={**deployment.env, "LSTM_IMAGE_TAG": new,
                                                        "COMPOSE": " ".join(compose_v2())})
        assert out.returncode == 0, out.stdout + out.stderr
        rolled, rolled_wait = time.monotonic() - start, load.longest_wait()
        during = set(deployment.running("replica"))
        assert len(during) == len(before) and not during & before, "the rollout left old replicas running"
        assert all(inspect(c)["Config"]["Image"] == f"lstm-service:{new}" for c in during)
        load.wait_steps(3)
        load.longest_wait()
        start = time.monotonic()
        deployment.compose("up", "--detach", "--wait", "--no-build", "--no-deps", "replica")  # back to `tag`
        plain, plain_wait = time.monotonic() - start, load.longest_wait()
        after = set(deployment.running("replica"))
        assert after and not after & during
        assert all(inspect(c)["Config"]["Image"] == f"lstm-service:{tag}" for c in after)
        load.wait_steps(3)
        summary = replay_check(deployment, load, "two rolling updates")
        print(f"{summary}; deploy/rollout.sh {rolled:.1f} s, longest wait of a call meanwhile {rolled_wait:.2f} s; "
              f"plain `compose up -d` {plain:.1f} s, longest wait {plain_wait:.2f} s")
    finally:
        load.__exit__()
        docker("rmi", "--force", f"lstm-service:{new}", check=False)


def test_kserve_sequences_without_the_header_are_served_through_the_proxy(deployment):
    """tritonclient puts the sequence id inside the protobuf, where HAProxy cannot see it: its
    calls go round robin, and each replica that gets one has the sequence handed over."""
    tc = pytest.importorskip("tritonclient.grpc")
    name = json.loads((MODEL / "model.json").read_text())["name"]
    client = tc.InferenceServerClient(deployment.target)
    text = b"O Romeo, Romeo! wherefore art thou Romeo?"
    sequences = [f"kserve-{os.getpid()}-{k}" for k in range(4)]
    got = {s: [] for s in sequences}
    try:
        for t in range(len(text)):
            for k, seq in enumerate(sequences):
                x = tc.InferInput("INPUT_IDS", [1, 1], "INT64")
                x.set_data_from_numpy(np.asarray([[text[(t + k) % len(text)]]], dtype=np.int64))
                r = client.infer(name, [x], sequence_id=seq, sequence_start=t == 0,
                                 sequence_end=t == len(text) - 1, parameters={"top_k": 3})
                got[seq].append(r.as_numpy("TOP_IDS")[0, 0].tolist())
    finally:
        client.close()
    reference = Reference(MODEL)
    for k, seq in enumerate(sequences):
        fed = bytes(text[(t + k) % len(text)] for t in range(len(text)))
        rows = reference.logprobs(fed)
        for t, top in enumerate(got[seq]):
            assert rows[t][top[0]] >= rows[t].max() - 2e-4, (
                f"{seq} token {t}: top-1 {top[0]} is not the argmax of one onnxruntime run over the same tokens")
    print(f"KServe through the proxy without x-session-id: {len(sequences)} sequences x {len(text)} calls, "
          "all answered, top-1 as one onnxruntime run over the same tokens")


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
