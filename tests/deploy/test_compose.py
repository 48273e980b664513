"""Static checks of docker-compose.yml (+ the deploy/compose.*.yml overlays), the Dockerfiles and the HAProxy config,
for machines without a Docker engine: files, ports, variables and images all
agree with the code. Runs Compose v2's `config`, `haproxy -c` and hadolint
when they are installed. tests/deploy/test_docker.py runs the real thing."""
from __future__ import annotations

import dataclasses
import re
import subprocess
from pathlib import Path

import pytest
import yaml  # the [dev] extra
from packaging.requirements import Requirement

from deploy_helpers import HAPROXY_CFG, PROXY_DOCKERFILE, ROOT, clean_env, find_haproxy, proxy_image_env
from docker_tools import compose_v2, tool
from lstm_service.service.proc.config import Config, env_name

COMPOSE = ROOT / "docker-compose.yml"
STACK = ROOT / "deploy" / "stack.yml"  # what only Swarm reads (deploy/stack-deploy.sh)
OVERLAYS = {name: ROOT / "deploy" / f"compose.{name}.yml" for name in ("gpu", "metrics", "train")}
DOCKERFILES = [ROOT / "Dockerfile", *sorted((ROOT / "deploy").glob("*.Dockerfile"))]
VARIABLE = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


def interpolate(text: str) -> str:
    """${NAME:-default} -> default, as compose does with nothing set."""
    return VARIABLE.sub(lambda m: m.group(2) or "", text)


def instructions(dockerfile: Path) -> list:
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


@pytest.fixture(scope="module")
def compose() -> dict:
    """The base file with every overlay's services added (enough for these checks;
    `extends` is resolved by hand: replica-gpu starts from replica)."""
    merged = yaml.safe_load(interpolate(COMPOSE.read_text()))
    for path in OVERLAYS.values():
        for name, service in yaml.safe_load(interpolate(path.read_text()))["services"].items():
            if "extends" in service:
                base = dict(merged["services"][service.pop("extends")["service"]])
                for key, value in service.items():
                    base[key] = {**base[key], **value} if isinstance(value, dict) and key in base else value
                service = base
            merged["services"][name] = service
    return merged


def port_of(address: str) -> int:
    return int(str(address).rpartition(":")[2])


def test_swarm_readable_base_and_compose_overlays():
    """Swarm's loader refuses profiles, a top-level name and depends_on maps,
    so the base file has none of them; the optional services are overlays.
    What compose would warn about (a file version, endpoint_mode, a port's
    mode) is in the Swarm-only deploy/stack.yml; .env names the project."""
    base = yaml.safe_load(interpolate(COMPOSE.read_text()))
    assert set(base["services"]) == {"redis", "replica", "proxy"}
    assert "name" not in base and "version" not in base
    assert "endpoint_mode" not in base["services"]["replica"]["deploy"]
    assert all("mode" not in port for port in base["services"]["proxy"]["ports"])
    assert "COMPOSE_PROJECT_NAME=lstm" in (ROOT / ".env").read_text().splitlines()
    for service in base["services"].values():
        assert "profiles" not in service and isinstance(service.get("depends_on", []), list)
    assert int(base["services"]["replica"]["deploy"]["replicas"]) == 3
    for name, path in OVERLAYS.items():
        assert set(yaml.safe_load(path.read_text())["services"]) == {"gpu": {"replica-gpu"}, "metrics": {
            "prometheus"}, "train": {"train"}}[name]


def test_every_variable_is_read_and_every_proxy_setting_has_a_default(compose):
    config_vars = {env_name(f.name) for f in dataclasses.fields(Config)}
    read_by_haproxy = set(re.findall(r'"\$\{(PROXY_\w+)\}"', HAPROXY_CFG.read_text()))
    defaults = proxy_image_env()
    assert set(defaults) == read_by_haproxy, "proxy.Dockerfile's ENV and haproxy.cfg disagree"
    for name, service in compose["services"].items():
        for var in service.get("environment", {}):
            assert var in config_vars | read_by_haproxy, f"{name}: {var} is read by nothing"
            assert var.startswith("PROXY_") == (name == "proxy"), f"{name}: {var} belongs to another service"


def test_ports_agree_across_compose_dockerfiles_haproxy_and_code(compose):
    services = compose["services"]
    env = services["replica"]["environment"]
    grpc_port, metrics_port = int(env["LSTM_PORT"]), int(env["LSTM_METRICS_PORT"])
    assert grpc_port == Config().port  # the service's own default
    host, _, upstream_port = services["proxy"]["environment"]["PROXY_REPLICAS"].rpartition(":")
    assert int(upstream_port) == grpc_port
    for name in ("replica", "replica-gpu"):  # the proxy finds every replica by its alias
        assert host in services[name]["networks"]["backend"]["aliases"]
    defaults = proxy_image_env()
    listen = port_of(services["proxy"]["environment"]["PROXY_LISTEN"])
    assert listen == port_of(defaults["PROXY_LISTEN"])
    assert [p["target"] for p in services["proxy"]["ports"]] == [listen]
    stack_ports = yaml.safe_load(interpolate(STACK.read_text()))["services"]["proxy"]["ports"]
    assert [(p["target"], p["mode"]) for p in stack_ports] == [(listen, "host")]  # Swarm: no IPVS needed
    for dockerfile in (ROOT / "Dockerfile", ROOT / "deploy" / "gpu.Dockerfile"):
        lines = " ".join(instructions(dockerfile))
        assert f"LSTM_PORT={grpc_port}" in lines and f"LSTM_METRICS_PORT={metrics_port}" in lines
        assert re.search(rf"EXPOSE {grpc_port} {metrics_port}\b", lines), dockerfile
    health_port = port_of(defaults["PROXY_HEALTH_LISTEN"])
    assert f"EXPOSE {listen} {health_port}" in " ".join(instructions(PROXY_DOCKERFILE))
    assert f"/dev/tcp/127.0.0.1/{health_port}" in " ".join(services["proxy"]["healthcheck"]["test"])
    prom = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    sd = prom["scrape_configs"][0]["dns_sd_configs"][0]
    assert sd["port"] == metrics_port and sd["names"] == [host]


def test_referenced_files_exist(compose):
    services = compose["services"]
    for name, service in services.items():
        build = service.get("build")
        if build:
            assert (ROOT / build["context"] / build["dockerfile"]).is_file(), name
    gpu_extends = yaml.safe_load(OVERLAYS["gpu"].read_text())["services"]["replica-gpu"]["extends"]
    assert (ROOT / gpu_extends["file"]).resolve() == COMPOSE  # paths resolve from the project folder
    model = ROOT / services["replica"]["volumes"][0]["source"]
    for file in ("model.json", "model.onnx"):
        assert (model / file).is_file(), f"the mounted model directory lacks {file}"


def test_healthchecks_stop_grace_and_dependencies(compose):
    services = compose["services"]
    for name in ("replica", "replica-gpu"):
        service = services[name]
        assert service["healthcheck"]["test"][:2] == ["CMD", "lstm-healthcheck"]
        grace = float(service["environment"]["LSTM_GRACE"])
        assert float(service["stop_grace_period"].rstrip("s")) > grace, "docker would kill a draining replica"
        assert service["stop_signal"] == "SIGTERM"
        assert service["read_only"] and service["volumes"][0]["read_only"]
        assert service["volumes"][0]["target"] == service["environment"]["LSTM_MODEL"]
    stack = yaml.safe_load(STACK.read_text())["services"]["replica"]["deploy"]
    assert stack["endpoint_mode"] == "dnsrr"  # swarm: one DNS address per replica
    assert yaml.safe_load(STACK.read_text())["services"]["redis"]["deploy"]["endpoint_mode"] == "dnsrr"  # no IPVS
    # Swarm's rolling update: one at a time, the new task healthy before the old one drains.
    assert stack["update_config"]["parallelism"] == 1 and stack["update_config"]["order"] == "start-first"
    proxy = services["proxy"]
    assert "ulimits" not in proxy, "a nofile ulimit above the engine's hard limit stops the proxy starting"
    assert proxy["stop_signal"] == "SIGUSR1"
    shutdown = float(proxy_image_env()["PROXY_SHUTDOWN_TIMEOUT"].rstrip("s"))
    assert float(proxy["stop_grace_period"].rstrip("s")) > shutdown
    assert proxy["depends_on"] == ["replica"]  # start order; HAProxy's own checks gate traffic
    for name in ("redis", "replica", "proxy"):
        assert services[name]["cap_drop"] == ["ALL"] and services[name]["read_only"] is True


def test_replicas_share_one_redis_with_its_append_only_file_on_a_volume_and_the_key_as_a_secret(compose):
    services = compose["services"]
    redis = services["redis"]
    env = services["replica"]["environment"]
    host, _, port = env["LSTM_STATE_STORE"].removeprefix("redis://").partition("/")[0].partition(":")
    assert host == "redis" and int(port) == 6379 and services["replica"]["depends_on"] == ["redis"]
    assert int(env["LSTM_SNAPSHOT_EVERY"]) == 1  # write-through: a replica's death loses no acknowledged step
    assert redis["networks"] == ["backend"] and "ports" not in redis  # reachable by the replicas only
    assert redis["volumes"] == ["redis-data:/data"] and "redis-data" in compose["volumes"]
    entry = " ".join(instructions(ROOT / "deploy" / "redis.Dockerfile"))
    assert '"--appendonly", "yes"' in entry and '"--dir", "/data"' in entry
    assert "redis-cli ping" in " ".join(redis["healthcheck"]["test"])
    assert services["replica"]["secrets"] == ["session_key"]
    assert env["LSTM_SESSION_KEY_FILE"] == "/run/secrets/session_key"
    assert compose["secrets"]["session_key"]["file"] == "./build/secrets/session.key"  # made by deploy/deploy.sh


def test_gpu_profile_reserves_a_device_and_asks_for_cuda(compose):
    gpu = compose["services"]["replica-gpu"]
    device = gpu["deploy"]["resources"]["reservations"]["devices"][0]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert gpu["environment"]["LSTM_DEVICE"] == "cuda" and gpu["build"]["dockerfile"] == "deploy/gpu.Dockerfile"
    assert compose["services"]["replica"]["environment"]["LSTM_DEVICE"] == "cpu"
    for name in ("replica", "replica-gpu", "proxy"):
        assert compose["services"][name]["deploy"]["resources"]["limits"]["memory"], name


def test_train_mounts_are_never_created_as_root(compose):
    train = compose["services"]["train"]
    assert train["user"] != "" and not train["user"].startswith("0")
    for volume in train["volumes"]:
        assert volume["bind"]["create_host_path"] is False, volume["source"]


def included(path: str, patterns: list) -> bool:
    """.dockerignore semantics for a whitelist: the last matching line wins."""
    keep = True
    for pattern in patterns:
        negate, pattern = pattern.startswith("!"), pattern.lstrip("!").rstrip("/")
        if pattern == "*" or path == pattern or path.startswith(pattern + "/"):
            keep = negate
    return keep


def test_dockerfiles_copy_what_exists_and_the_cpu_image_has_no_torch():
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#") and "*" not in line.strip("*")]
    for dockerfile in DOCKERFILES:
        lines = instructions(dockerfile)
        assert not dockerfile.read_text().startswith("# syntax"), "a syntax line needs Docker Hub under BuildKit"
        for line in lines:
            m = re.match(r"COPY\s+(.*)", line)
            if not m or "--from=" in line:
                continue
            for source in [w for w in m.group(1).split() if not w.startswith("--")][:-1]:
                if source.startswith(("build/wheelhouse", "build/project-wheel")):
                    continue  # made by deploy/wheelhouse.sh before the build
                assert (ROOT / source).exists(), f"{dockerfile.name}: COPY {source} does not exist"
                assert included(source.rstrip("/"), patterns), f"{dockerfile.name}: .dockerignore drops {source}"
        users = [line for line in lines if line.startswith("USER")]
        assert users and users[-1] == "USER 10001:10001", f"{dockerfile.name} runs as root"
    cpu = " ".join(instructions(ROOT / "Dockerfile"))
    assert "torch" not in cpu.replace("'torch', 'onnx'", "") and "[train]" not in cpu
    assert "--no-index --find-links /wheels" in cpu, "the CPU image must install offline from the wheelhouse"
    assert 'ENTRYPOINT ["lstm-serve"]' in cpu and "ORT_DISABLE_TELEMETRY=1" in cpu
    assert "torch==" in " ".join(instructions(ROOT / "deploy" / "train.Dockerfile"))


def test_the_lock_pins_every_serving_dependency_within_pyproject_ranges():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lock = {}
    for line in (ROOT / "deploy" / "requirements.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            lock[name] = version
    for spec in project["dependencies"]:
        req = Requirement(spec)
        name = re.sub(r"[-_.]+", "-", req.name).lower()
        assert name in lock, f"deploy/requirements.txt lacks {name} (deploy/wheelhouse.sh --lock)"
        assert req.specifier.contains(lock[name], prereleases=True), f"{name}=={lock[name]} is outside {req}"
    assert not {"torch", "onnx"} & set(lock)


def test_haproxy_accepts_the_config_with_the_image_defaults():
    haproxy = find_haproxy()
    if not haproxy:
        pytest.skip("haproxy is not installed")
    env = {**clean_env(), **proxy_image_env(), "PROXY_DNS": "127.0.0.1:53"}
    out = subprocess.run([haproxy, "-c", "-f", str(HAPROXY_CFG)], env=env, capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("overlays", [[], ["gpu"], ["metrics"], ["train"], ["gpu", "metrics"]])
def test_compose_v2_accepts_the_files(overlays):
    """Compose's own validator (needs only the client, no engine); always v2."""
    cmd = compose_v2()
    if cmd is None:
        pytest.skip("no Docker Compose v2 client installed")
    files = [arg for path in [COMPOSE, *(OVERLAYS[o] for o in overlays)] for arg in ("-f", str(path))]
    out = subprocess.run(cmd + files + ["config", "--services"], capture_output=True, text=True, cwd="/",
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stderr == "", f"compose warns: {out.stderr}"
    expected = {"redis", "replica", "proxy"} | {{"gpu": "replica-gpu", "metrics": "prometheus", "train": "train"}[o]
                                       for o in overlays}
    assert set(out.stdout.split()) == expected


def test_swarm_stack_loader_accepts_the_base_file_with_the_stack_overlay():
    """`docker stack config` is the client-side loader of `docker stack deploy` (no engine needed),
    given what deploy/stack-deploy.sh gives it: the file version, then both files."""
    helped = subprocess.run(["docker", "stack", "config", "--help"], capture_output=True, text=True,
                            timeout=30) if tool("docker") else None
    if helped is None or "--compose-file" not in helped.stdout:
        pytest.skip("no docker CLI with `stack config` (Debian's 20.10 CLI lacks it)")
    version = yaml.safe_load(STACK.read_text())["version"]
    out = subprocess.run(["docker", "stack", "config", "-c", "-", "-c", str(STACK)], capture_output=True, text=True,
                         cwd=ROOT, timeout=60, env={**clean_env(), "LSTM_PUBLISH_PORT": "50051"},
                         input=f'version: "{version}"\n' + COMPOSE.read_text())
    assert out.returncode == 0, out.stderr
    stack = yaml.safe_load(out.stdout)
    assert stack["services"]["replica"]["deploy"]["endpoint_mode"] == "dnsrr"
    assert [p["mode"] for p in stack["services"]["proxy"]["ports"]] == ["host"]
    assert stack["services"]["replica"]["secrets"] == [{"source": "session_key"}]
    assert stack["services"]["proxy"]["image"].startswith("lstm-proxy:")


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_finds_nothing(dockerfile):
    if not tool("hadolint"):
        pytest.skip("hadolint is not installed")
    out = subprocess.run([tool("hadolint"), str(dockerfile)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
