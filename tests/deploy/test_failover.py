"""Failover after kill -9: three replicas with ``--state-store`` on a real
redis-server, behind real HAProxy (deploy/haproxy.cfg with the image's
defaults, a DNS stub for Docker's DNS), as in tests/deploy/test_topology.py.

One replica is killed with SIGKILL. Its sessions that had a snapshot go on,
through the proxy, on another replica, from the snapshot's step: the client
learns that step from `expected_steps`, resends from there, and every
prediction is bitwise equal to a replay. Sessions that had no snapshot yet
are NOT_FOUND; sessions on the other replicas never notice. The time from the
kill to the first successful step elsewhere is printed (a figure, not a test
bound)."""
from __future__ import annotations

import signal
import time
from collections import defaultdict

import grpc
import pytest

from deploy_helpers import REPLICAS_NAME, find_haproxy, free_port, serving, start_proxy, stop, wait_until
from dns_stub import DnsStub
from durable_helpers import Driver, Service, assert_same_step, chunks_of, policy_steps, snapshot_steps
from durable_helpers import wait_for as wait_for_condition
from redis_helpers import REDIS_BINARY, running_redis

HAPROXY = find_haproxy()
pytestmark = [pytest.mark.skipif(HAPROXY is None, reason="haproxy is not installed (CI installs Debian's haproxy)"),
              pytest.mark.skipif(REDIS_BINARY is None, reason="redis-server is not installed (apt-get install redis-server)")]

TEXT = (b"Now is the winter of our discontent made glorious summer by this sun of York; "
        b"and all the clouds that lour'd upon our house in the deep bosom of the ocean buried. ")
SIZES = [3, 1, 5, 2, 4, 1, 1, 6, 2, 3]  # 28 tokens in 10 calls
EVERY = 8  # --snapshot-every: the last snapshot is at policy_steps(SIZES, EVERY) = 26
SAVED = policy_steps(SIZES, EVERY)
BOUNDARY = next(i for i in range(len(SIZES) + 1) if sum(SIZES[:i]) == SAVED)  # calls the snapshot covers
FULL_SESSIONS, YOUNG_SESSIONS = 24, 12
YOUNG_SIZES = [3, 2]  # 5 tokens < EVERY: no snapshot yet (and the idle snapshot is far off)
RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN)


def sid(kind: str, i: int) -> str:
    return f"{kind}-{i:04d}-failover-test"


def session_chunks(i: int):
    """Session i's calls: its own slice of TEXT, then the one sent after the failover."""
    text = TEXT[i:] + TEXT[:i]
    return chunks_of(text, SIZES + [2])


@pytest.fixture
def redis_server(tmp_path):
    yield from running_redis(tmp_path)


@pytest.fixture
def cluster(tiny_model_dir, tmp_path, redis_server):
    port = free_port()
    args = ["--state-store", redis_server.url, "--snapshot-every", str(EVERY), "--snapshot-idle-seconds", "600"]
    replicas = [Service(tiny_model_dir, tmp_path, f"replica-{i}", args, host=f"127.0.0.{2 + i}", port=port)
                for i in range(3)]
    dns = proxy = None
    try:
        for r in replicas:
            r.launch()
        for r in replicas:
            r.wait_serving()
        dns = DnsStub(REPLICAS_NAME, [r.host for r in replicas])
        proxy = start_proxy(HAPROXY, dns, port, tmp_path)
        wait_until(lambda: serving(proxy.target) and proxy.healthz() == 200, 20,
                   "no health answer through HAProxy", proxy.proc, proxy.log)
        yield replicas, proxy
    finally:
        if proxy is not None:
            stop(proxy.proc, signal.SIGUSR1)
        for r in replicas:
            r.stop()
        if dns is not None:
            dns.close()


def holders(replicas, ids) -> dict:
    """session id -> index of the replica holding it (asked directly, not via the proxy)."""
    where = defaultdict(list)
    for index, r in enumerate(replicas):
        direct = Driver(r.target)
        for s in direct.session_ids():
            if s in ids:
                where[s].append(index)
        direct.close()
    assert all(len(v) == 1 for v in where.values()), dict(where)
    return {s: v[0] for s, v in where.items()}


def step_until_served(driver: Driver, session_id: str, chunk, expected: int, timeout: float = 30.0):
    """The step, retried while the proxy still sends it to the dead replica (UNAVAILABLE & co.)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return driver.step(session_id, chunk, expected_steps=expected)
        except grpc.RpcError as exc:
            if exc.code() not in RETRYABLE or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def test_kill9_one_replica_its_snapshotted_sessions_continue_elsewhere(cluster, redis_server, capsys):
    replicas, proxy = cluster
    via_proxy = Driver(proxy.target)
    full = {sid("full", i): session_chunks(i) for i in range(FULL_SESSIONS)}
    young = {sid("young", i): chunks_of(TEXT[i:], YOUNG_SIZES) for i in range(YOUNG_SESSIONS)}
    for session_id, chunks in list(full.items()) + list(young.items()):
        fed = chunks[:len(SIZES)] if session_id in full else chunks
        via_proxy.create(session_id, fed[0])
        for chunk in fed[1:]:
            via_proxy.step(session_id, chunk)
    where = holders(replicas, set(full) | set(young))
    assert sorted(where) == sorted(set(full) | set(young)), "a session is on no replica"
    for session_id in full:
        wait_for_condition(lambda s=session_id: snapshot_steps(redis_server, s) == SAVED, 15,
                           f"{session_id}: no snapshot at step {SAVED} in Redis")
    assert all(snapshot_steps(redis_server, s) is None for s in young)

    def on(index, sessions):
        return [s for s in sessions if where[s] == index]
    victim = max(range(3), key=lambda k: min(len(on(k, full)), len(on(k, young))))
    lost_full, lost_young = on(victim, full), on(victim, young)
    assert lost_full and lost_young, f"sessions are not spread over the replicas: {dict(where)}"

    replicas[victim].kill9()
    killed_at = time.monotonic()
    first = lost_full[0]
    got = step_until_served(via_proxy, first, full[first][BOUNDARY], SAVED)
    failover = time.monotonic() - killed_at
    results = {first: [got]}
    for session_id in lost_full:  # resend everything after the snapshot, one call at a time
        resend = full[session_id][BOUNDARY + len(results.get(session_id, [])):]
        steps = results.setdefault(session_id, [])
        for chunk in resend:
            expected = SAVED + sum(len(c) for c in full[session_id][BOUNDARY:BOUNDARY + len(steps)])
            steps.append(step_until_served(via_proxy, session_id, chunk, expected))
    all_back = time.monotonic() - killed_at

    survivors = [k for k in range(3) if k != victim]
    moved_to = holders([replicas[k] for k in survivors], set(lost_full))
    assert sorted(moved_to) == sorted(lost_full), "a resumed session is held by no surviving replica"
    for session_id in lost_full:
        replay = via_proxy.replay(full[session_id])
        for j, (g, w) in enumerate(zip(results[session_id], replay[BOUNDARY:])):
            assert_same_step(g, w, f"{session_id}, call {BOUNDARY + j} after the failover")
    for session_id in lost_young:  # no snapshot: gone, and said so
        with pytest.raises(grpc.RpcError) as err:
            step_until_served(via_proxy, session_id, [65], sum(YOUNG_SIZES))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND, err.value.details()
    for session_id in set(full) - set(lost_full):  # the other replicas' sessions never noticed
        chunks = full[session_id]
        got = via_proxy.step(session_id, chunks[-1], expected_steps=sum(SIZES))
        assert_same_step(got, via_proxy.replay(chunks)[-1], f"{session_id} on a surviving replica")
    via_proxy.close()
    with capsys.disabled():
        print(f"\nfailover after kill -9: first step served elsewhere {failover:.2f} s after the kill; "
              f"all {len(lost_full)} snapshotted sessions of the killed replica caught up "
              f"({len(SIZES) - BOUNDARY + 1} calls each) {all_back:.2f} s after it; "
              f"{len(lost_young)} sessions without a snapshot NOT_FOUND")
