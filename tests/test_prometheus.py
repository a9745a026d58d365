"""Prometheus against the running services: every Grafana panel query and every rule has data.

promtool checks the shipped config and rules (and parses every panel expression). Then the real
thing on loopback: the session's Mosquitto, the detector, the alerting service and the streamer
(3 beds of MIT-BIH at 10x) as `python -m` subprocesses on free ports with the same
environment `make ward` gives them, and Debian's Prometheus scraping them every second with a
config generated from deploy/prometheus/prometheus.yml (only the targets and intervals change).

Some series exist only once something has happened, so the test makes it happen the way a ward
would: malformed sample chunks and beat messages (bad-message counters, by reason; sent again
after the first scrape, so the bad-message alerts go pending), and a nurse acknowledging an alarm
through the API (time-to-acknowledge histogram). Alert rules
are normally silent (their condition is false), so for each alert `<expr> <op> <number>` the test
queries `<expr>` without the threshold: the rule's input must exist, whatever its value.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from tests.helpers.broker import Broker
from tests.helpers.ports import free_port
from tests.helpers.waits import WaitTimeout, wait_until
from tests.helpers.ward import load_ward_module

ward = load_ward_module()

ROOT = Path(__file__).resolve().parent.parent
PROM_DIR = ROOT / "deploy" / "prometheus"
DASHBOARDS = sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))
RECORDS = ("203", "119", "100")  # VT runs from 46 s, ventricular bigeminy, normal
SPEED = 10
TOKEN = "prometheus-test-token"
# An alert expression: anything, then one comparison with a number (e.g. `up == 0`, `x > 2`).
_ALERT = re.compile(r"^(?P<expr>.+?)\s*(?P<op>==|!=|>=|<=|>|<)\s*(?P<value>[-+0-9.e]+)\s*$", re.S)


def _binary(name: str) -> str:
    found = shutil.which(name)
    if not found:
        pytest.fail(f"{name} is not installed; run scripts/install-system-deps.sh")
    return found


def panel_queries() -> list[tuple[str, str]]:
    """(dashboard/panel title, expr) of every panel target of the provisioned dashboards."""
    out = []
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                out.append((f"{path.stem}/{panel['title']}/{target['refId']}", target["expr"]))
    return out


def rule_queries() -> list[tuple[str, str]]:
    """(rule name, expr to query): recording rules as they are, alerts without the threshold."""
    doc = yaml.safe_load((PROM_DIR / "rules.yml").read_text())
    out = []
    for group in doc["groups"]:
        for rule in group["rules"]:
            if "record" in rule:
                out.append((rule["record"], rule["expr"]))
                continue
            m = _ALERT.match(rule["expr"].strip())
            assert m, f"alert {rule['alert']}: write it as `<expr> <op> <number>`"
            out.append((rule["alert"], m.group("expr")))
    return out


def test_dashboards_and_datasource_are_provisioned() -> None:
    assert [p.stem for p in DASHBOARDS] == ["system", "ward"]
    uids = set()
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        uids.add(board["uid"])
        assert board["panels"], f"{path.stem} has no panels"
        for panel in board["panels"]:
            assert panel["datasource"] == {"type": "prometheus", "uid": "prometheus"}
            assert panel["targets"], f"{path.stem}/{panel['title']} has no query"
    assert len(uids) == len(DASHBOARDS)
    prov = ROOT / "deploy" / "grafana" / "provisioning"
    ds = yaml.safe_load((prov / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert [(d["uid"], d["type"], d["url"]) for d in ds] == [
        ("prometheus", "prometheus", "http://prometheus:9090")
    ]
    provider = yaml.safe_load((prov / "dashboards" / "ecg.yml").read_text())["providers"][0]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./deploy/grafana/dashboards:{provider['options']['path']}:ro" in mounts


def test_promtool_checks_config_rules_and_panel_queries(tmp_path: Path) -> None:
    promtool = _binary("promtool")
    # the shipped config, but for where compose's entrypoint writes the metrics token
    conf = tmp_path / "prometheus.yml"
    shipped = (PROM_DIR / "prometheus.yml").read_text()
    assert "credentials_file: /tmp/metrics-token" in shipped
    conf.write_text(shipped.replace("/tmp/metrics-token", str(tmp_path / "metrics-token")))
    (tmp_path / "metrics-token").write_text("t" * 32)
    shutil.copy(PROM_DIR / "rules.yml", tmp_path / "rules.yml")
    for args in (
        ["check", "config", str(conf)],
        ["check", "rules", str(PROM_DIR / "rules.yml")],
    ):
        done = subprocess.run([promtool, *args], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
    # promtool parses PromQL only inside rule files: check the panels as recording rules.
    panels = {
        "groups": [
            {
                "name": "panels",
                "rules": [
                    {"record": f"panel:{i}", "expr": expr}
                    for i, (_, expr) in enumerate(panel_queries())
                ],
            }
        ]
    }
    path = tmp_path / "panels.yml"
    path.write_text(yaml.safe_dump(panels))
    done = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


@dataclass
class Stack:
    ward_name: str
    ports: dict[str, int]
    prometheus: str  # base URL
    broker: Broker
    logs: Path


def _get(url: str, token: str | None = None, data: bytes | None = None) -> object:
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read())


def _wait(
    what: str,
    ok: Callable[[], object],
    timeout: float,
    logs: Path,
    procs: Sequence[subprocess.Popen[bytes]] = (),
) -> object:
    """Poll `ok` until it returns something true; fail with the logs (at once if a child died)."""

    def give_up() -> None:
        tails = "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-2000:]}"
            for p in sorted(logs.glob("*.log"))
        )
        codes = [p.returncode for p in procs if p.poll() is not None]
        pytest.fail(f"gave up waiting for {what} (exited: {codes})\n{tails}")

    def exited() -> None:
        if any(p.poll() is not None for p in procs):
            give_up()

    try:  # a scrape or query a second: Prometheus is not hurried
        return wait_until(
            ok, timeout, what, interval=0.5, check=exited, ignore=(OSError, ValueError)
        )
    except WaitTimeout:
        give_up()
        raise


def prometheus_config(ports: dict[str, int], prom_port: int) -> dict:
    """deploy/prometheus/prometheus.yml with loopback targets and 1 s intervals."""
    conf = yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())
    conf["global"]["scrape_interval"] = "1s"
    conf["global"]["evaluation_interval"] = "1s"
    conf["rule_files"] = [str(PROM_DIR / f) for f in conf["rule_files"]]
    ports = {**ports, "prometheus": prom_port}
    for job in conf["scrape_configs"]:
        assert job["job_name"] in ports, f"no local port for job {job['job_name']}"
        job["static_configs"] = [{"targets": [f"127.0.0.1:{ports[job['job_name']]}"]}]
        if job["job_name"] == "alerting":  # its /metrics needs a token (per-bed heart rates)
            job["authorization"] = {"type": "Bearer", "credentials": TOKEN}
    return conf


@pytest.fixture(scope="module")
def stack(
    broker: Broker, data_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    run = tmp_path_factory.mktemp("prom-stack")
    name = f"prom-{int(time.time() * 1000) % 10**8}"
    cfg = ward.WardConfig(
        beds=RECORDS,
        speed=SPEED,
        ward=name,
        data_dir=data_dir,
        broker="external",
        mqtt_host=broker.host,
        mqtt_port=broker.port,
        token=TOKEN,
        run_dir=run,
    )
    ports = {"mqtt": broker.port, **{s.name: free_port() for s in ward.HTTP_SERVICES}}
    env = ward.service_env(cfg, ports, TOKEN)
    procs: list[subprocess.Popen[bytes]] = []

    def start(argv: list[str], log_name: str, extra_env: dict[str, str]) -> None:
        log = open(run / f"{log_name}.log", "wb")  # noqa: SIM115
        procs.append(
            subprocess.Popen(
                argv, cwd=ROOT, env={**os.environ, **extra_env}, stdout=log, stderr=log
            )
        )
        log.close()

    try:
        for spec in ward.SERVICES:  # detector, alerting, then the streamer
            start([sys.executable, "-m", spec.name], spec.name, env)
            if spec.port:
                url = f"http://127.0.0.1:{ports[spec.name]}/healthz"
                _wait(f"{spec.name} /healthz", lambda u=url: _get(u), 60, run, procs)
        prom_port = free_port()
        conf = run / "prometheus.yml"
        conf.write_text(yaml.safe_dump(prometheus_config(ports, prom_port)))
        check = subprocess.run(
            [_binary("promtool"), "check", "config", str(conf)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert check.returncode == 0, check.stdout + check.stderr
        start(
            [
                _binary("prometheus"),
                f"--config.file={conf}",
                f"--storage.tsdb.path={run / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
                "--log.level=warn",
            ],
            "prometheus",
            {},
        )
        base = f"http://127.0.0.1:{prom_port}"
        _wait(
            "prometheus ready",
            lambda: urllib.request.urlopen(f"{base}/-/ready", timeout=2),
            30,
            run,
            procs,
        )
        yield Stack(name, ports, base, broker, run)
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def query(stack: Stack, expr: str) -> list[dict]:
    url = f"{stack.prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    doc = _get(url)
    assert doc["status"] == "success", doc
    return doc["data"]["result"]


def inject_bad_messages(stack: Stack) -> None:
    """What a faulty device and a faulty publisher send: counted by reason and dropped."""
    publisher = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{stack.ward_name}-bad")
    publisher.connect(stack.broker.host, stack.broker.port)
    publisher.loop_start()
    try:
        topic = f"ecg/v1/{stack.ward_name}/bad-device"
        publisher.publish(f"{topic}/samples", b"ECGS not a chunk", qos=1).wait_for_publish(5)
        publisher.publish(f"{topic}/beats", b'{"beats": "nonsense"}', qos=1).wait_for_publish(5)
    finally:
        publisher.loop_stop()
        publisher.disconnect()


@pytest.mark.slow
def test_every_panel_and_rule_returns_data(stack: Stack) -> None:
    # The first bad message creates its counter series; the next ones, after a scrape, make
    # its rate() positive (a faulty device keeps sending), which the alert rules watch.
    inject_bad_messages(stack)
    for counter in ("ecg_detector_bad_messages_total", "ecg_alerting_dropped_messages_total"):
        _wait(f"{counter} scraped", lambda c=counter: query(stack, c), 30, stack.logs)
    inject_bad_messages(stack)

    # A nurse acknowledges the first alarm the replay raises.
    alerting = f"http://127.0.0.1:{stack.ports['alerting']}"

    def acknowledge_one() -> dict | None:
        for alarm in _get(f"{alerting}/api/alarms?state=active", TOKEN)["alarms"]:
            try:
                return _get(
                    f"{alerting}/api/alarms/{alarm['id']}/ack", TOKEN, data=b'{"by": "test nurse"}'
                )["alarm"]
            except urllib.error.HTTPError as exc:
                if exc.code != 409:  # 409: it ended meanwhile; try the next one
                    raise
        return None

    acked = _wait("an alarm from the replay to acknowledge", acknowledge_one, 60, stack.logs)
    assert acked["acknowledged_by"] == "test nurse"

    queries = panel_queries() + rule_queries()
    assert len(queries) > 20

    def empty() -> list[str]:
        return [f"{name}: {expr}" for name, expr in queries if not query(stack, expr)]

    missing: list[str] = []

    def all_have_data() -> bool:
        missing[:] = empty()
        return not missing

    with contextlib.suppress(WaitTimeout):  # the assertion below names what is missing
        wait_until(all_have_data, 60, "data for every query", interval=1.0)
    assert not missing, "queries without data:\n" + "\n".join(missing)

    # Every target is up and every rule evaluates without error.
    targets = _get(f"{stack.prometheus}/api/v1/targets")["data"]["activeTargets"]
    assert {t["labels"]["job"]: t["health"] for t in targets} == {
        "detector": "up",
        "alerting": "up",
        "streamer": "up",
        "prometheus": "up",
    }
    groups = _get(f"{stack.prometheus}/api/v1/rules")["data"]["groups"]
    rules = [r for g in groups for r in g["rules"]]
    assert len(rules) == len(rule_queries())
    assert all(r["health"] == "ok" for r in rules), [r for r in rules if r["health"] != "ok"]
    # The injected bad messages trip the bad-message alerts (pending for their `for:` time).
    for alert in ("DetectorBadMessages", "AlertingBadMessages"):
        _wait(
            f"{alert} pending",
            lambda a=alert: query(stack, f'ALERTS{{alertname="{a}"}}'),
            30,
            stack.logs,
        )
    # The replay is real data: beds stream, hearts beat at plausible rates.
    assert float(query(stack, "ecg_detector_active_beds")[0]["value"][1]) == len(RECORDS)
    rates = [float(s["value"][1]) for s in query(stack, "ecg_bed_heart_rate_bpm")]
    assert len(rates) == len(RECORDS) and all(20 < r < 300 for r in rates)
    # The streamer's own view agrees: every bed connected, chunks going out (2 per signal
    # second per bed at 10x: about 60 a second for 3 beds).
    assert float(query(stack, "ecg_streamer_connected_beds")[0]["value"][1]) == len(RECORDS)
    published = query(stack, "sum(rate(ecg_streamer_chunks_published_total[1m]))")
    assert float(published[0]["value"][1]) > 0
