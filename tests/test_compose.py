"""docker-compose.yml, checked without a Docker engine (none runs on these machines).

The file is parsed as YAML and checked against the repository: every service has a healthcheck
and a restart policy, built images have their Dockerfile and install no torch, the environment
variables compose sets are ones the services read, ports agree across compose, Prometheus and
the services' defaults, and the services, variables, defaults and ports are those `make ward`
(scripts/ward.py) uses. The healthcheck script the images run is exercised for real.

Security (docs/security.md): the one-shot `provision` service's command is run for real, the
broker config is the one ecgcommon.provision writes (and tests/test_broker_security.py runs),
anonymous access is off, each service gets its own credential from the secrets volume, and the
broker's healthcheck command logs in to a real broker with the provisioned healthcheck account.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import stat
import subprocess
import sys
import threading
import tomllib
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from ecgcommon import provision as prov
from tests.helpers.broker import Broker, SecureBroker
from tests.helpers.ward import load_ward_module

ward = load_ward_module()

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
PYTHON_SERVICES = {s.name for s in ward.SERVICES}
HEALTHCHECK = ROOT / "deploy" / "healthcheck.py"
_INTERPOLATION = re.compile(r"^\$\{(\w+)(?::?([-?])([^}]*))?\}$")


def compose_default(value: object) -> str | None:
    """The value compose uses when the host sets nothing: `${X:-d}` -> d, `${X:?m}` -> None."""
    text = str(value)
    m = _INTERPOLATION.match(text)
    if not m:
        return text
    return m.group(3) if m.group(2) == "-" else None


def env_of(service: str) -> dict[str, str]:
    env = SERVICES[service].get("environment", {})
    assert isinstance(env, dict), f"{service}: write environment as a mapping"
    return {k: str(v) for k, v in env.items()}


def variables_read_by(package: str) -> set[str]:
    """Upper-case names quoted in the service's and ecgcommon's sources (os.environ keys)."""
    names: set[str] = set()
    for folder in (ROOT / package, ROOT / "ecgcommon"):
        for path in folder.rglob("*.py"):
            names.update(re.findall(r"[\"']([A-Z][A-Z0-9_]{2,})[\"']", path.read_text()))
    return names


ONE_SHOT = {"provision"}  # runs to completion before the broker starts
SECRETS = "/run/secrets/ward"  # where the services mount the secrets volume


def test_expected_services_each_with_healthcheck_and_restart() -> None:
    assert set(SERVICES) == {"mosquitto", "prometheus", "grafana"} | PYTHON_SERVICES | ONE_SHOT
    for name in ONE_SHOT:
        assert SERVICES[name]["restart"] == "no" and "healthcheck" not in SERVICES[name]
    for name, svc in SERVICES.items():
        if name in ONE_SHOT:
            continue
        assert svc.get("restart") in ("always", "unless-stopped", "on-failure"), name
        test = svc.get("healthcheck", {}).get("test")
        assert isinstance(test, list) and test[0] in ("CMD", "CMD-SHELL") and len(test) > 1, name
        assert "image" in svc or "build" in svc, name


DOCKERFILE = ROOT / "deploy" / "Dockerfile"  # one stage per service, on a shared `base`


def dockerfile_stages() -> dict[str, tuple[str, str]]:
    """deploy/Dockerfile's stages: name -> (the image it starts FROM, its instructions)."""
    text = "\n".join(ln for ln in DOCKERFILE.read_text().splitlines() if not ln.startswith("#"))
    stage = re.compile(r"^FROM (\S+) AS (\w+)\n.*?(?=^FROM |\Z)", re.M | re.S)
    return {m[2]: (m[1], m[0]) for m in stage.finditer(text)}


def image_text(target: str) -> str:
    """The instructions that make the image of stage `target`: its parent stages' first."""
    stages = dockerfile_stages()
    assert target in stages, f"{DOCKERFILE} has no stage {target}"
    parts = []
    while target in stages:
        target, text = stages[target]
        parts.insert(0, text)
    return "\n".join(parts)


def test_built_images_have_a_dockerfile_without_torch_or_data() -> None:
    assert set(dockerfile_stages()) == {"base"} | PYTHON_SERVICES, "a stage per service"
    for name in PYTHON_SERVICES:
        build = SERVICES[name]["build"]
        assert build["context"] == "."
        assert ROOT / build["dockerfile"] == DOCKERFILE and build["target"] == name, name
        dockerfile = f"{DOCKERFILE.relative_to(ROOT)} target {name}"
        text = image_text(name)
        assert re.search(r"^FROM python:3\.11-slim", text, re.M), name
        others = PYTHON_SERVICES - {name}
        assert not any(f"COPY {o} " in text for o in others), f"{dockerfile} copies another service"
        assert re.search(rf"^COPY {name} {name}$", text, re.M), f"{dockerfile}: no {name}/"
        assert ("models/artifacts" in text) == (name == "detector"), f"{dockerfile}: the model"
        assert "torch" not in text.lower(), f"{dockerfile}: run-time images carry no torch"
        installs = re.findall(r"pip install ([^&\n]+)", text)
        assert installs == [". "] or installs == ["."], f"{dockerfile}: plain `pip install .`"
        assert "mitdb" not in text and "shared" not in text, f"{dockerfile} copies data"
        copies = re.findall(r"^COPY (.+)$", text, re.M)
        assert copies, f"{dockerfile} copies nothing"
        for line in copies:
            for src in line.split()[:-1]:
                assert (ROOT / src).exists(), f"{dockerfile}: COPY {src} does not exist"
        assert re.search(rf'^CMD \["python", "-m", "{name}"\]', text, re.M), name
    runtime = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert not any("torch" in dep for dep in runtime), "`pip install .` would pull torch"
    ignore = [
        ln
        for ln in (ROOT / ".dockerignore").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    assert ignore[0] == "**", ".dockerignore starts from nothing and lists what images need"
    assert not any("data" in ln or "venv" in ln for ln in ignore if ln.startswith("!"))


def test_detector_image_carries_the_onnx_model() -> None:
    """The files the scorer loads (detector.scorer), copied and allowed in by .dockerignore."""
    from detector.scorer import MANIFEST_FILE, MODEL_FILE

    text = image_text("detector")
    needed = [f"models/artifacts/{MODEL_FILE}", f"models/artifacts/{MANIFEST_FILE}"]
    assert f"COPY {' '.join(needed)} models/artifacts/" in text
    assert "DETECTOR_MODEL_DIR=/app/models/artifacts" in text
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    for path in needed:
        assert (ROOT / path).is_file(), f"{path} is not there (make train)"
        assert f"!{path}" in ignore
    tracked = subprocess.run(
        ["git", "ls-files", "--error-unmatch", *needed], cwd=ROOT, capture_output=True, text=True
    )
    assert tracked.returncode == 0, f"the model is not committed: {tracked.stderr}"


def test_environment_variables_are_read_by_the_services() -> None:
    for name in PYTHON_SERVICES:
        read = variables_read_by(name)
        unknown = set(env_of(name)) - read
        assert not unknown, f"{name} does not read {sorted(unknown)}"


def split_volume(volume: str) -> tuple[str, str]:
    """`source:target[:mode]`, where source may be a `${VAR:-default}` interpolation."""
    cut = volume.index("}") + 1 if volume.startswith("${") else volume.index(":")
    return volume[:cut], volume[cut + 1 :].split(":")[0]


def test_mounted_files_and_volumes_exist() -> None:
    declared = set(COMPOSE.get("volumes", {}))
    for name, svc in SERVICES.items():
        for volume in svc.get("volumes", []):
            source, target = split_volume(volume)
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name}: {source} missing"
            elif not source.startswith("${"):
                assert source in declared, f"{name}: volume {source} not declared"
            assert target.startswith("/")
    # The alarm store lives on a named volume, at the folder of ALERTING_DB.
    db = env_of("alerting")["ALERTING_DB"]
    mounts = {t: s for s, t in map(split_volume, SERVICES["alerting"]["volumes"])}
    assert mounts.get(str(Path(db).parent)) in declared
    # MIT-BIH: mounted read-only where ECG_DATA_DIR points, from $ECG_DATA_DIR or ../shared.
    data = [v for v in SERVICES["streamer"]["volumes"] if "mitdb" in v]
    assert data == ["${ECG_DATA_DIR:-../shared/data/mitdb}:/data/mitdb:ro"]
    assert env_of("streamer")["ECG_DATA_DIR"] == "/data/mitdb"


def test_ports_agree_across_compose_prometheus_and_healthchecks() -> None:
    prom = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    targets = {
        job["job_name"]: [t for sc in job["static_configs"] for t in sc["targets"]]
        for job in prom["scrape_configs"]
    }
    for spec in ward.HTTP_SERVICES:
        env = env_of(spec.name)
        assert env[spec.port_env] == str(spec.port), spec.name
        assert env[spec.host_env] == "0.0.0.0", f"{spec.name} must listen beyond loopback"
        assert f"127.0.0.1:{spec.port}:{spec.port}" in SERVICES[spec.name]["ports"]
        assert f"http://127.0.0.1:{spec.port}/healthz" in SERVICES[spec.name]["healthcheck"]["test"]
        assert targets[spec.name] == [f"{spec.name}:{spec.port}"]
    assert env_of("alerting")["DETECTOR_URL"] == f"http://detector:{ward.SERVICES[0].port}"
    for name in PYTHON_SERVICES:
        env = env_of(name)
        assert (env["MQTT_HOST"], env["MQTT_PORT"]) == ("mosquitto", str(ward.MQTT_PORT))
    assert "127.0.0.1:1883:1883" in SERVICES["mosquitto"]["ports"]
    assert f"127.0.0.1:{ward.MQTT_TLS_PORT}:{ward.MQTT_TLS_PORT}" in SERVICES["mosquitto"]["ports"]
    conf = (ROOT / "deploy" / "mosquitto" / "mosquitto.conf").read_text()
    assert re.search(rf"^listener {ward.MQTT_PORT} 0\.0\.0\.0$", conf, re.M)
    assert re.search(rf"^listener {ward.MQTT_TLS_PORT} 0\.0\.0\.0$", conf, re.M)


def test_same_services_variables_and_defaults_as_make_ward(tmp_path: Path) -> None:
    cfg = ward.WardConfig(run_dir=tmp_path)
    ports = {"mqtt": ward.MQTT_PORT, **{s.name: s.port for s in ward.HTTP_SERVICES}}
    creds = ward.provision_ward(cfg)
    launches = {x.name: x for x in ward.plan(cfg, ports, "x" * 16, creds)}
    ward_env: dict[str, str] = {}
    compose_env: dict[str, str | None] = {}
    for name in PYTHON_SERVICES:
        ward_env.update(launches[name].env)
        for key, value in env_of(name).items():
            compose_env[key] = compose_default(value)
        # each service its own credential, the same variables in both
        own = set(ward.credential_env(name, creds))
        assert own and own <= set(env_of(name)), name
        assert not (set(env_of(name)) - own) & {"MQTT_PASSWORD_FILE", "MQTT_USERNAME"}, name
        if "MQTT_USERNAME" in own:
            assert env_of(name)["MQTT_USERNAME"] == launches[name].env["MQTT_USERNAME"] == name
            assert env_of(name)["MQTT_PASSWORD_FILE"] == f"{SECRETS}/passwords/{name}"
    assert env_of("streamer")["STREAMER_DEVICE_CREDENTIALS"] == (
        f"{SECRETS}/{creds.streamer_devices.name}"
    )
    assert set(ward_env) == set(compose_env)
    # Host-specific values differ by design (container paths, service names, secrets).
    site_specific = {
        "MQTT_HOST",
        "ECG_DATA_DIR",
        "ALERTING_DB",
        "ALERTING_TOKEN",
        "DETECTOR_URL",
        "DETECTOR_HTTP_HOST",
        "ALERTING_HOST",
        "STREAMER_HTTP_HOST",
        "MQTT_USERNAME",  # per service, checked above
        "MQTT_PASSWORD_FILE",
        "STREAMER_DEVICE_CREDENTIALS",
        "ECG_DETECTOR_TOKEN",  # a secret: the host sets it (compose), or derived (make ward)
        "ALERTING_METRICS_TOKEN",  # the same
    }
    shared = set(ward_env) - site_specific
    assert len(shared) >= 5, shared  # the comparison below compares something
    for key in shared:
        assert ward_env[key] == compose_env[key], key
    names = [str(spec.name) for spec in ward.SERVICES]
    external = ward.plan(ward.WardConfig(run_dir=tmp_path, broker="external"), ports, "x" * 16)
    assert [launch.name for launch in external] == names


def _provision_argv() -> list[str]:
    """The provision service's command with compose's defaults filled in."""
    command = SERVICES["provision"]["command"]
    return [str(compose_default(a)) if a.startswith("${") else a for a in command]


def test_provision_service_writes_what_the_broker_and_services_mount(tmp_path: Path) -> None:
    """The one-shot service's own command (defaults filled in, /secrets -> a temporary folder),
    run for real: the files the broker config and the services name exist, owned as the
    containers need when run as root (as the service is), secrets 0600."""
    provision = SERVICES["provision"]
    assert provision["build"] == SERVICES["detector"]["build"]
    assert provision["image"] == SERVICES["detector"]["image"]
    assert provision["volumes"] == ["ward-secrets:/secrets"]
    argv = _provision_argv()
    assert argv[:3] == ["python", "-m", "ecgcommon.provision"]
    out = tmp_path / "secrets"
    args = [str(out) if a == "/secrets" else a for a in argv[3:]]
    if os.geteuid() != 0:  # chown needs root, as in the container
        i = args.index("--broker-owner")
        args = args[:i]
    assert prov.main(args) == 0
    creds = prov.load(out)
    ward_name = compose_default(env_of("detector")["ECG_WARD"])
    beds = int(str(compose_default(env_of("streamer")["STREAMER_BEDS"])))
    devices = [a for a in creds.accounts if a.role == "device"]
    assert {(a.ward, a.bed) for a in devices} == {(ward_name, b) for b in prov.bed_names(beds)}
    owners = {"broker": (1883, 1883), "service": (10001, 10001)} if os.geteuid() == 0 else {}
    for volume in SERVICES["mosquitto"]["volumes"]:
        source, target = split_volume(volume)
        if source == "ward-secrets":
            assert target == "/mosquitto/secrets" and volume.endswith(":ro")
    conf = (ROOT / "deploy" / "mosquitto" / "mosquitto.conf").read_text()
    for path in re.findall(
        r"^(?:password_file|acl_file|cafile|certfile|keyfile) (\S+)$", conf, re.M
    ):
        local = out / Path(path).relative_to("/mosquitto/secrets")
        assert local.is_file(), path
        if owners and not path.endswith(".crt"):
            assert (local.stat().st_uid, local.stat().st_gid) == owners["broker"], path
            assert stat.S_IMODE(local.stat().st_mode) == 0o600, path
    for name in PYTHON_SERVICES:
        mounts = dict(map(split_volume, SERVICES[name]["volumes"]))
        assert mounts["ward-secrets"] == SECRETS, name
        assert [v for v in SERVICES[name]["volumes"] if v.startswith("ward-secrets:")][0].endswith(
            ":ro"
        )
        for key in ("MQTT_PASSWORD_FILE", "STREAMER_DEVICE_CREDENTIALS"):
            if key in env_of(name):
                local = out / Path(env_of(name)[key]).relative_to(SECRETS)
                assert local.is_file(), key
                assert stat.S_IMODE(local.stat().st_mode) == 0o600
                if owners:
                    assert (local.stat().st_uid, local.stat().st_gid) == owners["service"]
    for name in ("mosquitto", *PYTHON_SERVICES):
        needs = SERVICES[name]["depends_on"]
        assert "mosquitto" in needs or needs["provision"] == {
            "condition": "service_completed_successfully"
        }


def test_broker_config_is_the_provisioned_one() -> None:
    """deploy/mosquitto/mosquitto.conf says what ecgcommon.provision.mosquitto_conf says for the
    container paths (comments and log settings aside): what tests/test_broker_security.py runs."""

    def directives(text: str) -> list[str]:
        return [
            ln
            for ln in text.splitlines()
            if ln.strip() and not ln.startswith("#") and not ln.startswith("log_")
        ]

    deployed = (ROOT / "deploy" / "mosquitto" / "mosquitto.conf").read_text()
    made = prov.mosquitto_conf(
        Path("/mosquitto/secrets"), "0.0.0.0", ward.MQTT_PORT, "0.0.0.0", ward.MQTT_TLS_PORT
    )
    assert directives(deployed) == directives(made)
    assert "allow_anonymous false" in directives(deployed)


def test_broker_healthcheck_logs_in_with_the_healthcheck_account(
    secure_broker: SecureBroker,
) -> None:
    """The mosquitto service's healthcheck command, run against a real broker with the
    provisioned files (container path and port swapped): it succeeds with the healthcheck
    account; the same command without it is refused."""
    test = SERVICES["mosquitto"]["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL"
    command = test[1].replace("$$", "$")  # compose's escape for a literal $
    command = command.replace("/mosquitto/secrets", str(secure_broker.creds.folder))
    command = command.replace(f"-p {ward.MQTT_PORT}", f"-p {secure_broker.port}")
    done = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    anonymous = re.sub(r"-u healthcheck -P \"[^\"]+\" ", "", command)
    assert anonymous != command
    done = subprocess.run(["sh", "-c", anonymous], capture_output=True, text=True, timeout=30)
    assert done.returncode != 0


@pytest.mark.slow
def test_healthcheck_script_http(tmp_path: Path) -> None:
    codes = {"/healthz": 200, "/degraded": 503}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            self.send_response(codes.get(self.path, 404))
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        assert _run_healthcheck(f"{base}/healthz") == 0
        assert _run_healthcheck(f"{base}/degraded") == 1
    finally:
        server.shutdown()
    assert _run_healthcheck(f"{base}/healthz") == 1  # nothing listening


@pytest.mark.slow
def test_healthcheck_script_mqtt_status(broker: Broker, unique_ward: str) -> None:
    url = f"mqtt://{broker.host}:{broker.port}/ecg/v1/{unique_ward}/+/status"
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"hc-{unique_ward}")
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        status = f"ecg/v1/{unique_ward}/1/status"
        client.publish(
            status, json.dumps({"state": "offline", "t": 0}), qos=1, retain=True
        ).wait_for_publish(5)
        assert _run_healthcheck(url) == 1  # only an offline bed: unhealthy (after the timeout)
        client.publish(
            status, json.dumps({"state": "online", "t": 0}), qos=1, retain=True
        ).wait_for_publish(5)
        assert _run_healthcheck(url) == 0
        client.publish(status, b"", qos=1, retain=True).wait_for_publish(5)  # clear it
    finally:
        client.loop_stop()
        client.disconnect()


def _run_healthcheck(url: str) -> int:
    return subprocess.run([sys.executable, str(HEALTHCHECK), url], timeout=30).returncode


# ---------------------------------------------------------------- the cluster file (scaling.md)
CLUSTER = yaml.safe_load((ROOT / "docker-compose.cluster.yml").read_text())
NATS_CONF = ROOT / "deploy" / "nats" / "nats.conf"


def test_cluster_file_has_three_engine_nodes_and_detector_replicas() -> None:
    """3 NATS nodes on the same config, routed to each other, N detector workers and alerting on
    the bus naming every node, the streamer on NATS's MQTT port; the mapping in the nodes'
    config is the one ecgcommon.subjects makes (the workers assume its partitions)."""
    from bench.cluster.engine import mapping_block
    from ecgcommon.subjects import PARTITIONS, parse_bus

    services = CLUSTER["services"]
    nodes = sorted(s for s in services if s.startswith("nats-"))
    assert nodes == ["nats-1", "nats-2", "nats-3"]
    text = NATS_CONF.read_text()
    for node in nodes:
        svc = services[node]
        assert "./deploy/nats/nats.conf:/etc/nats/nats.conf:ro" in svc["volumes"]
        assert svc["environment"]["NATS_NAME"] == node
        assert f"nats-route://{node}:6222" in text
        assert "healthcheck" in svc and svc["restart"] == "unless-stopped"
    assert mapping_block(PARTITIONS) in text
    assert "stream_replicas: 3" in text and "jetstream" in text
    det = services["detector"]
    assert compose_default(det["deploy"]["replicas"]) == "2"
    for name in ("detector", "alerting"):
        env = services[name]["environment"]
        bus = parse_bus(env["ECG_BUS"])
        assert sorted(s.split("//")[1].split(":")[0] for s in bus.servers) == nodes
        assert "ECG_BUS" in variables_read_by(name)
    assert services["detector"]["environment"]["ECG_PARTITIONS"] == str(PARTITIONS)
    assert services["streamer"]["environment"]["MQTT_HOST"] in nodes


def test_cluster_nats_config_is_accepted_by_nats_server() -> None:
    import shutil

    binary = shutil.which("nats-server") or "/usr/sbin/nats-server"
    if not Path(binary).exists():
        raise AssertionError("nats-server is not installed; run scripts/install-system-deps.sh")
    out = subprocess.run(
        [binary, "-t", "-c", str(NATS_CONF)],
        capture_output=True,
        text=True,
        env={**os.environ, "NATS_NAME": "nats-1"},
        timeout=30,
    )
    assert out.returncode == 0, out.stdout + out.stderr
