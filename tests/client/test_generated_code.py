"""The client package's copy of the generated lstm.v1 code is current, imports only itself,
and `build_proto --check` looks at it as well as at the server's copy."""
import shutil
import subprocess
import sys

from tools.build_proto import CLIENT_DEST, ROOT, generate_client, stale_files


def test_the_client_copy_is_current_and_self_contained():
    assert stale_files(CLIENT_DEST, generate_client) == [], "run: python -m tools.build_proto"
    stub = (CLIENT_DEST / "lstm" / "v1" / "lstm_pb2_grpc.py").read_text()
    assert "from lstm_client.proto.lstm.v1 import lstm_pb2" in stub and "lstm_service" not in stub


def test_check_reports_a_stale_client_copy(tmp_path):
    copy = tmp_path / "proto"
    shutil.copytree(CLIENT_DEST, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "lstm" / "v1" / "lstm_pb2.py").write_text("# edited by hand\n")
    assert stale_files(copy, generate_client) == ["lstm/v1/lstm_pb2.py"]
    checked = subprocess.run([sys.executable, "-m", "tools.build_proto", "--check"], cwd=ROOT,
                             capture_output=True, text=True, timeout=120)
    assert checked.returncode == 0, checked.stdout + checked.stderr
