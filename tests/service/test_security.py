"""Identity and ownership with real parts: a real server with a tokens file, TLS
and mutual TLS with certificates made by openssl, and the real client package.
Another principal's session does not exist for the caller, on every call."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import grpc
import pytest

from lstm_client import AsyncClient
from lstm_service.service.proto.lstm.v1 import lstm_pb2 as pb
from lstm_service.service.proto.lstm.v1 import lstm_pb2_grpc as pb_grpc
from principals import TOKENS, as_, tokens_file
from svc_helpers import serving

async def code_of(awaitable) -> grpc.StatusCode:
    try:
        await awaitable
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


async def test_no_token_or_a_wrong_one_is_unauthenticated_and_health_stays_open(tiny_model_dir, tmp_path):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    async with serving(tiny_model_dir, tokens_file=str(tokens_file(tmp_path))) as s:
        assert await code_of(s.stub.ListModels(pb.ListModelsRequest())) == grpc.StatusCode.UNAUTHENTICATED
        bad = (("authorization", "Bearer not-a-token"),)
        assert await code_of(s.stub.ListModels(pb.ListModelsRequest(), metadata=bad)) == grpc.StatusCode.UNAUTHENTICATED
        assert await code_of(s.stub.ListModels(pb.ListModelsRequest(), metadata=as_("alice"))) == grpc.StatusCode.OK
        health = await health_pb2_grpc.HealthStub(s.channel).Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.SERVING


async def test_another_principals_session_does_not_exist_on_any_call(tiny_model_dir, tmp_path):
    async with serving(tiny_model_dir, tokens_file=str(tokens_file(tmp_path)), session_key_file=str(key(tmp_path))) as s:
        stub = s.stub
        sid = "alice-private-session-01"
        await stub.CreateSession(pb.CreateSessionRequest(session_id=sid, prompt=pb.Input(text="my secret")),
                                 metadata=as_("alice"))
        never = "never-existed-session-01"
        calls = lambda i: [  # noqa: E731 - the same calls on alice's id and on an id never used
            stub.GetSession(pb.GetSessionRequest(session_id=i), metadata=as_("bob")),
            stub.Predict(pb.PredictRequest(session_id=i, input=pb.Input(text="x")), metadata=as_("bob")),
            stub.ResetSession(pb.ResetSessionRequest(session_id=i), metadata=as_("bob")),
            stub.DeleteSession(pb.DeleteSessionRequest(session_id=i), metadata=as_("bob")),
            stub.ForkSession(pb.ForkSessionRequest(session_id=i), metadata=as_("bob")),
            stub.ExportSession(pb.ExportSessionRequest(session_id=i), metadata=as_("bob")),
            stub.Generate(pb.GenerateRequest(session_id=i), metadata=as_("bob")).read(),
        ]
        for theirs, missing in zip(calls(sid), calls(never)):
            with pytest.raises(grpc.aio.AioRpcError) as a:
                await theirs
            with pytest.raises(grpc.aio.AioRpcError) as b:
                await missing
            assert a.value.code() == b.value.code() == grpc.StatusCode.NOT_FOUND
            assert a.value.details().replace(sid, never) == b.value.details()  # no oracle in the message
        stream = stub.Stream(metadata=as_("bob"))
        await stream.write(pb.StreamRequest(open=pb.OpenStream(session_id=sid)))
        assert await code_of(stream.read()) == grpc.StatusCode.NOT_FOUND
        listed = await stub.ListSessions(pb.ListSessionsRequest(), metadata=as_("bob"))
        assert listed.total == 0 and not listed.sessions
        admin = await stub.ListSessions(pb.ListSessionsRequest(), metadata=as_("ops"))
        assert [x.id for x in admin.sessions] == [f"alice/{sid}"]  # another namespace: PRINCIPAL/ID
        mine = await stub.GetSession(pb.GetSessionRequest(session_id=sid), metadata=as_("alice"))
        assert mine.session.steps == len("my secret")  # bob's attempts changed nothing


async def test_the_client_package_sends_the_token(tiny_model_dir, tmp_path):
    async with serving(tiny_model_dir, tokens_file=str(tokens_file(tmp_path))) as s:
        async with AsyncClient(s.target, token=TOKENS["alice"]) as client:
            created = await client.create_session("hello")
            assert (await client.get_session(created.session.id)).steps == 5
        async with AsyncClient(s.target) as anonymous:
            with pytest.raises(grpc.RpcError) as info:
                await anonymous.models()
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


def key(tmp_path: Path) -> Path:
    path = tmp_path / "session.key"
    path.write_bytes(b"k" * 48)
    return path


# -- TLS -----------------------------------------------------------------------------
def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(directory: Path, name: str) -> None:
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
            "-keyout", f"{name}.key", "-out", f"{name}.pem", cwd=directory)


def make_cert(directory: Path, ca: str, name: str, san: str = "") -> None:
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", f"{name}.key",
            "-out", f"{name}.csr", cwd=directory)
    extra = ["-extfile", "san.cnf"] if san else []
    if san:
        (directory / "san.cnf").write_text(f"subjectAltName={san}\n")
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-CAcreateserial",
            "-days", "2", "-out", f"{name}.pem", *extra, cwd=directory)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    if not shutil.which("openssl"):
        pytest.skip("openssl is not installed (Debian package openssl)")
    d = tmp_path_factory.mktemp("pki")
    make_ca(d, "ca")
    make_ca(d, "other-ca")
    make_cert(d, "ca", "server", "DNS:localhost,IP:127.0.0.1")
    make_cert(d, "ca", "carol")  # a client certificate: principal "carol"
    make_cert(d, "other-ca", "mallory")
    return d


async def test_tls_with_the_right_ca_works_and_the_wrong_one_fails(tiny_model_dir, pki):
    async with serving(tiny_model_dir, tls_cert=str(pki / "server.pem"), tls_key=str(pki / "server.key")) as s:
        good = grpc.aio.secure_channel(s.target, grpc.ssl_channel_credentials((pki / "ca.pem").read_bytes()))
        wrong = grpc.aio.secure_channel(s.target, grpc.ssl_channel_credentials((pki / "other-ca.pem").read_bytes()))
        try:
            assert await code_of(pb_grpc.LstmServiceStub(good).ListModels(pb.ListModelsRequest(), timeout=10)) \
                == grpc.StatusCode.OK
            assert await code_of(pb_grpc.LstmServiceStub(wrong).ListModels(pb.ListModelsRequest(), timeout=10)) \
                == grpc.StatusCode.UNAVAILABLE
        finally:
            await good.close()
            await wrong.close()


async def test_mutual_tls_maps_the_certificate_to_its_principal(tiny_model_dir, pki):
    async with serving(tiny_model_dir, tls_cert=str(pki / "server.pem"), tls_key=str(pki / "server.key"),
                       tls_client_ca=str(pki / "ca.pem")) as s:
        ca = (pki / "ca.pem").read_bytes()
        async with AsyncClient(s.target, root_certificates=ca, client_certificate=(pki / "carol.pem").read_bytes(),
                               client_key=(pki / "carol.key").read_bytes()) as carol:
            sid = (await carol.create_session("tls")).session.id
            assert (await carol.get_session(sid)).steps == 3
        async with AsyncClient(s.target, root_certificates=ca, client_certificate=(pki / "mallory.pem").read_bytes(),
                               client_key=(pki / "mallory.key").read_bytes(), timeout=10) as mallory:
            with pytest.raises(grpc.RpcError) as info:  # a certificate from another CA: no handshake
                await mallory.models()
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        async with AsyncClient(s.target, root_certificates=ca, timeout=10) as nobody:
            with pytest.raises(grpc.RpcError):  # no client certificate at all
                await nobody.models()
