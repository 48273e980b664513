"""The compose topology as plain processes: 3 replicas behind real HAProxy.

HAProxy runs deploy/haproxy.cfg, the proxy image's file, with the image's
PROXY_* defaults; a DNS stub answers the replicas' name as Docker's DNS does,
so adding a replica is one more address in the answer. Sessions go through the
proxy with lstm_client.Client, whose `x-session-id` header is the hash key.
Affinity is proven by state continuity: a session fed in many small steps
must score exactly like one onnxruntime call over its whole text, and a step
that reached a replica without the session would fail with NOT_FOUND.

The tests share one topology (module fixture); the last one stops a replica.
"""
from __future__ import annotations

import re
import signal
import subprocess
import sys
from collections import defaultdict

import grpc
import pytest

from reference import Reference
from deploy_helpers import (assert_matches, clean_env, find_haproxy, free_port, serving, start_replica,
                            stop, topology, wait_until)
from lstm_client import Client, ClientError

HAPROXY = find_haproxy()
pytestmark = pytest.mark.skipif(HAPROXY is None, reason="haproxy is not installed (CI installs Debian's haproxy)")

TEXT = (b"Now is the winter of our discontent made glorious summer by this sun of York; "
        b"and all the clouds that lour'd upon our house in the deep bosom of the ocean buried. ")
SESSIONS = 50
STEPS = 8


def session_text(i: int) -> list:
    """The chunks session i feeds: its own slice of TEXT cut into 1..5-byte pieces."""
    data = (TEXT[i:] + TEXT[:i])[: 5 * STEPS]
    chunks, at = [], 0
    for j in range(STEPS):
        size = 1 + (i + j) % 5
        chunks.append(data[at:at + size])
        at += size
    return chunks


@pytest.fixture(scope="module")
def cluster(tiny_model_dir, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("topology")
    with topology(tiny_model_dir, workdir, HAPROXY) as (replicas, proxy, dns):
        yield replicas, proxy, dns, workdir


@pytest.fixture(scope="module")
def reference(tiny_model_dir):
    return Reference(tiny_model_dir)


def holders(replicas, ids) -> dict:
    """session id -> indexes of the replicas that hold it (asked directly, not via the proxy)."""
    found = defaultdict(list)
    for index, r in enumerate(replicas):
        with Client(r.target, timeout=10) as direct:
            for s in direct.list_sessions(limit=1000).sessions:
                if s.id in ids:
                    found[s.id].append(index)
    return found


def test_50_sessions_keep_their_state_and_replica_through_haproxy(cluster, reference):
    replicas, proxy, _dns, _ = cluster
    client = Client(proxy.target, timeout=20)
    unary_ids, streams = [], []
    fed = [b""] * SESSIONS
    try:
        # Half the sessions are unary calls, half long-lived Streams, all open at once.
        for i in range(SESSIONS):
            first = session_text(i)[0]
            if i % 2 == 0:
                created = client.create_session(first.decode())
                unary_ids.append(created.session.id)
                result = created.result
            else:
                stream = client.stream()
                streams.append(stream)
                result = stream.send(first.decode())
            fed[i] = first
            assert_matches(result, reference.logprobs(fed[i])[-1], len(fed[i]), f"session {i} step 0")
        for j in range(1, STEPS):  # round robin: every session advances one step at a time
            for i in range(SESSIONS):
                chunk = session_text(i)[j]
                if i % 2 == 0:
                    result = client.predict(unary_ids[i // 2], chunk.decode())
                else:
                    result = streams[i // 2].send(chunk.decode())
                fed[i] += chunk
                assert_matches(result, reference.logprobs(fed[i])[-1], len(fed[i]), f"session {i} step {j}")

        # Each session lives on exactly one replica, and they are spread over several.
        ids = set(unary_ids) | {s.session_id for s in streams}
        assert len(ids) == SESSIONS
        where = holders(replicas, ids)
        assert sorted(where) == sorted(ids), "a session is missing from every replica"
        assert all(len(v) == 1 for v in where.values()), "a session exists on two replicas"
        per_replica = [sum(1 for v in where.values() if v == [k]) for k in range(len(replicas))]
        assert sum(1 for n in per_replica if n) >= 2, f"all sessions on one replica: {per_replica}"
        # The Prometheus gauge each replica serves agrees (>=: other tests' sessions may remain).
        for r, n in zip(replicas, per_replica):
            assert r.active_sessions() >= n
        for i, sid in enumerate(unary_ids):  # GetSession through the proxy reaches the holder
            assert client.get_session(sid).steps == len(fed[2 * i])
    finally:
        for s in streams:
            s.close()
        client.close()

    # HAProxy's own log agrees: every session's calls went to one upstream address.
    upstreams = defaultdict(set)
    for line in proxy.log.read_text().splitlines():
        m = re.search(r"session=(\S+) upstream=(\S+)", line)
        if m and m.group(1) != "-":
            upstreams[m.group(1)].add(m.group(2))
    assert len(upstreams) >= SESSIONS - 1  # 8-character tags: a collision is possible, not likely
    assert all(len(v) == 1 for v in upstreams.values()), dict(upstreams)


def test_the_container_healthcheck_probe(cluster):
    """`python -m lstm_service.service.proc.healthcheck`, the Dockerfile/compose HEALTHCHECK: 0 only when SERVING."""
    replicas, proxy, _dns, _ = cluster
    probe = [sys.executable, "-m", "lstm_service.service.proc.healthcheck", "--timeout", "5"]
    env = {**clean_env(), "LSTM_PORT": str(replicas[0].port)}  # the default target follows LSTM_PORT
    assert subprocess.run(probe + ["--target", replicas[0].target], env=env, capture_output=True,
                          timeout=30).returncode == 0
    assert subprocess.run(probe + ["--target", proxy.target], capture_output=True, timeout=30).returncode == 0
    dead = subprocess.run(probe + ["--target", f"127.0.0.1:{free_port()}", "--timeout", "1"],
                          capture_output=True, text=True, timeout=30)
    assert dead.returncode == 1 and "UNAVAILABLE" in dead.stderr
    unknown = subprocess.run(probe + ["--target", replicas[0].target, "--service", "no.such.Service"],
                             capture_output=True, text=True, timeout=30)
    assert unknown.returncode == 1 and "NOT_FOUND" in unknown.stderr


def test_forked_sessions_are_reachable_through_the_proxy(cluster, reference):
    _replicas, proxy, _dns, _ = cluster
    with Client(proxy.target, timeout=20) as client:
        for _ in range(10):
            parent = client.create_session("ROMEO:").session.id
            fork = client.fork_session(parent)
            assert_matches(client.predict(fork.id, " O"), reference.logprobs(b"ROMEO: O")[-1], 8, "fork")


def test_a_replica_added_to_dns_takes_new_sessions_by_itself(cluster, reference, tiny_model_dir):
    """One more address in the DNS answer (compose: --scale): HAProxy fills a
    free slot without a reload; sessions on the others keep their replica
    unless the ring moved their key to the new one (then NOT_FOUND: without
    snapshots, a moved session is gone)."""
    replicas, proxy, dns, workdir = cluster
    client = Client(proxy.target, timeout=20)
    before = {client.create_session("ab").session.id for _ in range(40)}
    new = start_replica(tiny_model_dir, workdir, f"127.0.0.{2 + len(replicas)}", replicas[0].port)
    replicas.append(new)  # the fixture stops it with the others
    wait_until(lambda: serving(new.target), 60, "the added replica never served", new.proc, new.log)
    dns.addresses.append(new.host)

    def routed_to_new() -> bool:
        client.create_session("x")
        return new.active_sessions() > 0
    wait_until(routed_to_new, 20, "HAProxy never sent a session to the added replica", proxy.proc, proxy.log)

    moved = 0
    for sid in before:
        try:
            assert client.predict(sid, "c").steps == 3
        except ClientError as exc:
            assert exc.code() == grpc.StatusCode.NOT_FOUND, exc
            moved += 1
    print(f"scale 3 -> 4: {moved} of {len(before)} sessions moved to the new replica")
    assert moved < len(before) // 2, f"{moved} of {len(before)} sessions lost their replica"
    assert new.active_sessions() > 0
    client.close()


def test_stopping_a_replica_leaves_the_others_sessions_working(cluster, reference):
    replicas, proxy, _dns, _ = cluster
    client = Client(proxy.target, timeout=20)
    texts = {}
    for i in range(30):
        text = (TEXT[2 * i:] + TEXT)[:6]
        sid = client.create_session(text.decode()).session.id
        texts[sid] = text
    where = holders(replicas, set(texts))
    counts = [sum(1 for v in where.values() if v == [k]) for k in range(len(replicas))]
    victim = max(range(len(replicas)), key=counts.__getitem__)
    assert 0 < counts[victim] < len(texts), f"sessions are not spread: {counts}"

    assert stop(replicas[victim].proc, signal.SIGTERM) == 0, "the replica did not drain and exit cleanly"
    assert not serving(replicas[victim].target)

    for round_ in range(2):  # twice: a dead replica keeps failing cleanly, never answers wrongly
        for sid, text in texts.items():
            if where[sid] == [victim]:
                with pytest.raises(grpc.RpcError) as info:
                    client.predict(sid, "x")
                assert info.value.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAVAILABLE), (
                    f"session on the stopped replica: {info.value.code()} {info.value.details()}")
            else:
                texts[sid] = text + b"e"
                result = client.predict(sid, "e")
                assert_matches(result, reference.logprobs(texts[sid])[-1], len(texts[sid]),
                               f"session on replica {where[sid]} after the stop, round {round_}")

    # New sessions still work, and stay consistent across calls.
    for i in range(10):
        created = client.create_session("ROMEO:")
        result = client.predict(created.session.id, " O")
        assert_matches(result, reference.logprobs(b"ROMEO: O")[-1], 8, f"new session {i}")
    client.close()
    assert serving(proxy.target) and proxy.healthz() == 200

    # With no replica left the proxy reports itself unhealthy (the container
    # healthcheck asks this), rather than staying "healthy" and answering 502.
    for r in replicas:
        stop(r.proc)
    wait_until(lambda: proxy.healthz() == 503, 10, "HAProxy still healthy with every replica stopped",
               proxy.proc, proxy.log)
