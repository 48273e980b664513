"""The committed generated code matches the .proto; the .proto is documented;
configuration reads flags and LSTM_* variables."""
import re
from pathlib import Path

import pytest

from lstm_service.service.proc.config import Config, load_config
from lstm_service.service.api.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
PROTO = ROOT / "protos" / "lstm" / "v1" / "lstm.proto"


def test_generated_code_is_not_stale():
    pytest.importorskip("grpc_tools")
    from tools.build_proto import stale_files

    assert stale_files() == [], "run: python -m tools.build_proto"


def test_stale_check_notices_a_change(tmp_path):
    pytest.importorskip("grpc_tools")
    from tools.build_proto import DEST, generate, stale_files

    copy = tmp_path / "proto"
    generate(copy)
    assert stale_files(copy) == []
    stub = copy / "lstm" / "v1" / "lstm_pb2.py"
    stub.write_text(stub.read_text() + "\n# hand edit\n")
    assert stale_files(copy) == ["lstm/v1/lstm_pb2.py"]
    assert (DEST / "lstm" / "v1" / "lstm_pb2_grpc.py").read_text().count("from lstm_service.service.proto.lstm.v1 import") == 1


def test_every_message_field_enum_and_rpc_is_documented():
    lines = PROTO.read_text().splitlines()
    declaration = re.compile(
        r"^\s*(message \w+|enum \w+|rpc \w+|(optional |repeated )?[\w.]+ \w+ = \d+;|[A-Z_0-9]+ = \d+;|oneof \w+)"
    )
    undocumented = [
        line.strip() for i, line in enumerate(lines)
        if declaration.match(line) and not lines[i - 1].strip().startswith("//")
    ]
    assert undocumented == []
    assert "package lstm.v1;" in lines


def test_flags_env_and_defaults():
    default = load_config([], environ={})
    assert default == Config() and default.address == "127.0.0.1:50051" and default.model == "models/shakespeare"
    env = {"LSTM_PORT": "6000", "LSTM_MAX_SESSIONS": "7", "LSTM_ORT_SPIN": "true", "LSTM_PRECISION": "int8"}
    config = load_config(["--port", "7000", "--max-batch-delay-ms", "0.5"], environ=env)
    assert (config.port, config.max_sessions, config.ort_spin, config.precision) == (7000, 7, True, "int8")
    assert config.max_batch_delay_ms == 0.5
    with pytest.raises(ConfigError, match="device must be auto, cpu or cuda"):
        load_config(["--device", "tpu"], environ={})
    with pytest.raises(ConfigError, match="LSTM_PORT"):
        load_config([], environ={"LSTM_PORT": "many"})
    with pytest.raises(dataclasses_frozen()):
        config.port = 1


def dataclasses_frozen():
    import dataclasses

    return dataclasses.FrozenInstanceError


def test_the_configuration_doc_lists_every_option_as_the_code_does():
    from lstm_service.service.proc.config import options_table

    doc = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    assert options_table() in doc, "docs/configuration.md is stale: python -m lstm_service.service.proc.config"
