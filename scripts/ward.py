"""`make ward`: a simulated ward on one machine: broker, streamer, detector, alerting.

Process supervision only. The launcher picks ports and a token, provisions the broker's
credentials into a private folder (ecgcommon.provision; reused on the next run), starts an MQTT
broker with authentication on and anonymous access off (Mosquitto where installed, with its
password file, ACL and a TLS listener; else the pure-Python amqtt broker with the same accounts
and topic rules but no client-id protection), then the three services as `python -m <service>`
children configured through the same environment variables docker compose sets
(tests/test_compose.py keeps the two in step), each with its own credential, waits until each
is up (/healthz), prints the dashboard and every service's /metrics URL, and on Ctrl-C
(SIGINT) or SIGTERM stops the children in order (producer first, broker last) and exits 0.
Child logs go to files under the run folder.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from ecgcommon import provision as prov
from ecgcommon.topics import DEFAULT_WARD

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA_DIR = ROOT.parent / "shared" / "data" / "mitdb"
# 100: normal sinus rhythm; 119: ventricular bigeminy; the other six hold annotated
# ventricular tachycardia runs ('(VT' rhythm notes in their .atr files).
DEFAULT_BEDS: tuple[str, ...] = ("100", "119", "200", "203", "207", "210", "213", "233")
BROKER_MODES = ("auto", "mosquitto", "embedded", "external")


@dataclass(frozen=True)
class ServiceSpec:
    """One service as both the ward and docker compose run it."""

    name: str  # compose service name and `python -m` module
    port_env: str | None = None  # environment variable the service reads for its HTTP port
    port: int | None = None  # default HTTP port (/metrics, /healthz); None: no HTTP server
    host_env: str | None = None  # environment variable the service reads for its bind address


# Start order (consumers subscribed before the streamer publishes); stopped in reverse.
SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec("detector", "DETECTOR_HTTP_PORT", 8000, "DETECTOR_HTTP_HOST"),
    ServiceSpec("alerting", "ALERTING_PORT", 8080, "ALERTING_HOST"),
    ServiceSpec("streamer", "STREAMER_HTTP_PORT", 9101, "STREAMER_HTTP_HOST"),
)
HTTP_SERVICES = tuple(s for s in SERVICES if s.port is not None)
MQTT_PORT = 1883
MQTT_TLS_PORT = 8883  # the same broker over TLS (devices off this machine)


@dataclass(frozen=True)
class WardConfig:
    """The ward's settings; errors name the bad field."""

    beds: tuple[str, ...] = DEFAULT_BEDS
    speed: float = 1.0  # replay speed, 1.0 = real time
    ward: str = DEFAULT_WARD
    data_dir: Path = DEFAULT_DATA_DIR
    broker: str = "auto"
    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = MQTT_PORT
    mqtt_tls_port: int = MQTT_TLS_PORT
    http_host: str = "127.0.0.1"
    ports: Mapping[str, int] = field(default_factory=dict)  # service name -> HTTP port
    free_ports: bool = False  # pick free loopback ports for the broker and every service
    token: str = ""  # dashboard token; generated when empty
    run_dir: Path = ROOT / "var" / "ward"
    secrets_dir: Path | None = None  # None: <run_dir>/secrets
    startup_timeout_s: float = 60.0
    stop_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if not self.beds or any(not b or "/" in b for b in self.beds):
            raise ValueError(f"beds must be non-empty record names, got {self.beds!r}")
        if not self.speed > 0:
            raise ValueError(f"speed must be > 0, got {self.speed}")
        if self.broker not in BROKER_MODES:
            raise ValueError(f"broker must be one of {BROKER_MODES}, got {self.broker!r}")
        for name in ("mqtt_port", "mqtt_tls_port"):
            if not 0 <= getattr(self, name) <= 65535:
                raise ValueError(f"{name} must be 0-65535, got {getattr(self, name)}")
        unknown = set(self.ports) - {s.name for s in HTTP_SERVICES}
        if unknown:
            raise ValueError(f"ports names unknown services {sorted(unknown)}")
        if self.token and len(self.token) < 8:
            raise ValueError("token must be at least 8 characters")
        for name in ("startup_timeout_s", "stop_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")


@dataclass(frozen=True)
class Launch:
    """One child process to start: argv, environment additions, and how to tell it is up."""

    name: str
    argv: list[str]
    env: dict[str, str]
    health_url: str | None = None  # up when this answers 200
    listens: tuple[str, int] | None = None  # up when this accepts TCP (the broker)
    stop_signal: int = signal.SIGTERM  # what makes it shut down cleanly


def free_port(host: str = "127.0.0.1") -> int:
    """A port the kernel says is free now (another process may still take it later)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def mosquitto_binary() -> str | None:
    """Mosquitto's path where it is installed (Debian puts it in /usr/sbin)."""
    found = shutil.which("mosquitto")
    if found:
        return found
    return "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").is_file() else None


def secrets_folder(cfg: WardConfig) -> Path:
    return cfg.secrets_dir if cfg.secrets_dir is not None else cfg.run_dir / "secrets"


def provision_ward(cfg: WardConfig) -> prov.Provisioned:
    """The ward's accounts (one device per bed, the services), made once and then reused."""
    hosts = tuple(dict.fromkeys(("localhost", "127.0.0.1", cfg.mqtt_host)))
    return prov.provision(
        prov.ProvisionConfig(
            out=secrets_folder(cfg),
            ward=cfg.ward,
            beds=tuple(prov.bed_names(len(cfg.beds))),
            hostnames=hosts,
        )
    )


def broker_launch(
    mode: str,
    host: str,
    port: int,
    run_dir: Path,
    creds: prov.Provisioned | None = None,
    tls_port: int | None = None,
) -> Launch | None:
    """The broker child for `mode` ('external' = use a broker that already runs: None).
    With `creds`, authentication is on and anonymous access off."""
    if mode == "external":
        return None
    binary = mosquitto_binary() if mode in ("auto", "mosquitto") else None
    if mode == "mosquitto" and binary is None:
        raise RuntimeError("mosquitto is not installed; use --broker embedded or auto")
    if binary:
        conf = run_dir / "mosquitto.conf"
        if creds is None:
            text = (
                f"listener {port} {host}\nallow_anonymous true\npersistence false\n"
                "max_queued_messages 100000\n"
            )
        else:  # run as root, Mosquitto drops to `mosquitto`, who cannot read the 0600 files
            user = "root" if os.geteuid() == 0 else None
            text = prov.mosquitto_conf(creds.folder, host, port, host, tls_port, user)
        conf.write_text(text)
        return Launch("mosquitto", [binary, "-c", str(conf)], {}, listens=(host, port))
    if importlib.util.find_spec("amqtt") is None:
        raise RuntimeError("no MQTT broker: install Mosquitto, or amqtt (the dev extra: make venv)")
    conf = run_dir / "amqtt.yaml"
    conf.write_text(amqtt_config(host, port, creds, run_dir))
    argv = [sys.executable, "-m", "amqtt.scripts.broker_script", "-c", str(conf)]
    # amqtt's command shuts down cleanly on KeyboardInterrupt only.
    return Launch("amqtt", argv, {}, listens=(host, port), stop_signal=signal.SIGINT)


def amqtt_config(host: str, port: int, creds: prov.Provisioned | None, run_dir: Path) -> str:
    """The embedded broker's config: with `creds`, the provisioned accounts (argon2 hashes in a
    0600 file) and the same topic rules as Mosquitto's ACL; anonymous clients are refused."""
    listener = f"listeners:\n  default:\n    type: tcp\n    bind: {host}:{port}\n"
    if creds is None:
        return (
            listener + "plugins:\n  amqtt.plugins.authentication.AnonymousAuthPlugin:\n"
            "    allow_anonymous: true\n"
        )
    from pwdlib.hashers.argon2 import Argon2Hasher  # an amqtt dependency

    hasher = Argon2Hasher()
    passwd = run_dir / "amqtt.passwd"
    lines = [f"{a.username}:{hasher.hash(creds.password(a.username))}" for a in creds.accounts]
    fd = os.open(passwd, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(lines) + "\n")
    publish: dict[str, list[str]] = {}
    subscribe: dict[str, list[str]] = {}
    for account in creds.accounts:
        for access, topic in prov.acl_rules(account):
            (publish if access == "write" else subscribe).setdefault(account.username, [])
            (publish if access == "write" else subscribe)[account.username].append(topic)
    plugins = {
        "amqtt.plugins.authentication.FileAuthPlugin": {"password_file": str(passwd)},
        "amqtt.plugins.topic_checking.TopicAccessControlListPlugin": {
            "publish_acl": publish,
            "acl": subscribe,
        },
    }
    return listener + "plugins: " + json.dumps(plugins) + "\n"  # JSON is YAML


def credential_env(name: str, creds: prov.Provisioned | None) -> dict[str, str]:
    """The variables that give service `name` its own credential (empty without `creds`)."""
    if creds is None:
        return {}
    if name == "streamer":  # it speaks as the simulated devices, one credential each
        return {"STREAMER_DEVICE_CREDENTIALS": str(creds.streamer_devices)}
    return {"MQTT_USERNAME": name, "MQTT_PASSWORD_FILE": str(creds.password_file(name))}


def service_env(cfg: WardConfig, ports: Mapping[str, int], token: str) -> dict[str, str]:
    """The environment every service gets: the variable names docker compose sets."""
    env = {
        "MQTT_HOST": cfg.mqtt_host,
        "MQTT_PORT": str(ports["mqtt"]),
        "ECG_WARD": cfg.ward,
        "ECG_DATA_DIR": str(cfg.data_dir),
        "STREAMER_BEDS": str(len(cfg.beds)),
        "STREAMER_RECORDS": ",".join(cfg.beds),
        "STREAMER_SPEED": f"{cfg.speed:g}",
        "ALERTING_TOKEN": token,
        "ALERTING_DB": str(cfg.run_dir / "alarms.db"),
        "DETECTOR_URL": f"http://{cfg.http_host}:{ports['detector']}",
        # the detector's POST /v1/score token, the same for the detector and alerting
        "ECG_DETECTOR_TOKEN": hashlib.sha256(f"detector:{token}".encode()).hexdigest()[:32],
        # a token that opens alerting's /metrics only (what a Prometheus scraping it is given)
        "ALERTING_METRICS_TOKEN": hashlib.sha256(f"metrics:{token}".encode()).hexdigest()[:32],
    }
    if cfg.speed != 1:  # accelerated replay: the signal clock runs ahead of the wall clock
        env["ALERTING_MAX_CLOCK_SKEW_S"] = "0"
    for spec in HTTP_SERVICES:
        env[str(spec.port_env)] = str(ports[spec.name])
        env[str(spec.host_env)] = cfg.http_host
    return env


def plan(
    cfg: WardConfig,
    ports: Mapping[str, int],
    token: str,
    creds: prov.Provisioned | None = None,
) -> list[Launch]:
    """The children in start order: broker (if any), then the services, each with its own
    credential when `creds` is given (the ward's own broker: authentication on)."""
    launches: list[Launch] = []
    broker = broker_launch(
        cfg.broker, cfg.mqtt_host, ports["mqtt"], cfg.run_dir, creds, ports.get("mqtt_tls")
    )
    if broker:
        launches.append(broker)
    env = service_env(cfg, ports, token)
    for spec in SERVICES:
        argv = [sys.executable, "-m", spec.name]
        url = f"http://{cfg.http_host}:{ports[spec.name]}/healthz" if spec.port else None
        own = {**env, **credential_env(spec.name, creds)}
        launches.append(Launch(spec.name, argv, own, health_url=url))
    return launches


def resolve_ports(cfg: WardConfig) -> dict[str, int]:
    """Broker and service ports: free ones with --free-ports, else the defaults/overrides."""
    ports = {"mqtt": cfg.mqtt_port or free_port(cfg.mqtt_host)}
    if cfg.free_ports and cfg.broker != "external":
        ports["mqtt"] = free_port(cfg.mqtt_host)
    if cfg.broker != "external":
        tls = cfg.mqtt_tls_port if not cfg.free_ports else 0
        ports["mqtt_tls"] = tls or free_port(cfg.mqtt_host)
    for spec in HTTP_SERVICES:
        chosen = cfg.ports.get(spec.name, 0 if cfg.free_ports else spec.port)
        ports[spec.name] = chosen or free_port(cfg.http_host)
    return ports


def busy_ports(cfg: WardConfig, ports: Mapping[str, int]) -> list[str]:
    """The ports the ward would listen on that something else already holds."""
    wanted = {"mqtt": cfg.mqtt_host, "mqtt_tls": cfg.mqtt_host} if cfg.broker != "external" else {}
    wanted.update({s.name: cfg.http_host for s in HTTP_SERVICES})
    busy = []
    for name, host in wanted.items():
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do
            try:
                s.bind((host, ports[name]))
            except OSError:
                busy.append(f"{name} {host}:{ports[name]}")
    return busy


def missing_records(data_dir: Path, beds: Sequence[str]) -> list[str]:
    return [b for b in beds if not (data_dir / f"{b}.hea").is_file()]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except (OSError, urllib.error.URLError):
        return False


# Supervision: a dead child is restarted after RESTART_MIN_S, doubling to RESTART_MAX_S while it
# keeps dying; a child that has run RESTART_RESET_S is back to the minimum.
RESTART_MIN_S = 1.0
RESTART_MAX_S = 10.0
RESTART_RESET_S = 60.0


class Ward:
    """Starts the plan's children, supervises them (restart with backoff), stops them in order."""

    def __init__(self, cfg: WardConfig, out: TextIO = sys.stdout) -> None:
        self.cfg = cfg
        self.out = out
        self.children: list[tuple[Launch, subprocess.Popen[bytes]]] = []
        self.stop_requested = False
        self.restarts: dict[str, int] = {}  # child name -> restarts so far

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def _start(self, launch: Launch) -> subprocess.Popen[bytes]:
        # appended: a restarted child's log keeps the lines of the run that died
        log = open(self.cfg.run_dir / f"{launch.name}.log", "ab")  # noqa: SIM115 (child owns it)
        env = {**os.environ, **launch.env, "PYTHONUNBUFFERED": "1"}
        # Own session: a terminal's Ctrl-C reaches only the ward, which stops children in order.
        proc = subprocess.Popen(
            launch.argv,
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        for i, (old, _) in enumerate(self.children):
            if old.name == launch.name:  # a restart takes the dead child's place (stop order)
                self.children[i] = (launch, proc)
                break
        else:
            self.children.append((launch, proc))
        return proc

    def log_tail(self, name: str, lines: int = 15) -> str:
        path = self.cfg.run_dir / f"{name}.log"
        text = path.read_text(errors="replace") if path.is_file() else ""
        return "\n".join(text.splitlines()[-lines:])

    def start(self, launches: Sequence[Launch]) -> None:
        """Start each child and wait until it is up before the next (RuntimeError if not)."""
        deadline = time.monotonic() + self.cfg.startup_timeout_s
        for launch in launches:
            if self.stop_requested:
                return
            proc = self._start(launch)
            while not self.stop_requested and not self._up(launch):
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"{launch.name} exited with code {proc.returncode}:\n"
                        + self.log_tail(launch.name)
                    )
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{launch.name} was not up within "
                        f"{self.cfg.startup_timeout_s:g} s:\n" + self.log_tail(launch.name)
                    )
                time.sleep(0.2)

    @staticmethod
    def _up(launch: Launch) -> bool:
        if launch.listens is not None:
            try:
                socket.create_connection(launch.listens, timeout=0.5).close()
                return True
            except OSError:
                return False
        if launch.health_url is not None:
            return _healthy(launch.health_url)
        return True

    def watch(self) -> str | None:
        """Supervise until a stop is requested (then None): a child that dies is logged and
        restarted after a backoff (RESTART_MIN_S doubling to RESTART_MAX_S; back to the minimum
        once it has run RESTART_RESET_S), so one crash is not the end of the ward."""
        backoff: dict[str, float] = {}
        due: dict[str, float] = {}  # child name -> monotonic time of its restart
        started = {launch.name: time.monotonic() for launch, _ in self.children}
        while not self.stop_requested:
            now = time.monotonic()
            for launch, proc in list(self.children):
                name = launch.name
                if name in due:
                    if now >= due[name]:
                        del due[name]
                        self.restarts[name] = self.restarts.get(name, 0) + 1
                        self.say(f"ward: restarting {name} (restart #{self.restarts[name]})")
                        self._start(launch)
                        started[name] = now
                    continue
                if proc.poll() is None:
                    if now - started.get(name, now) >= RESTART_RESET_S:
                        backoff.pop(name, None)
                    continue
                wait = backoff.get(name, RESTART_MIN_S)
                backoff[name] = min(RESTART_MAX_S, wait * 2)
                due[name] = now + wait
                self.say(
                    f"ward: {name} exited unexpectedly (code {proc.returncode}); "
                    f"restarting it in {wait:g} s:\n{self.log_tail(name)}"
                )
            time.sleep(0.2)
        return None

    def stop(self) -> None:
        """SIGTERM the children newest first: the streamer (no new data) ... the broker."""
        for launch, proc in reversed(self.children):
            if proc.poll() is None:
                proc.send_signal(launch.stop_signal)
                try:
                    proc.wait(timeout=self.cfg.stop_timeout_s)
                except subprocess.TimeoutExpired:
                    self.say(
                        f"{launch.name} did not stop within "
                        f"{self.cfg.stop_timeout_s:g} s; killing it"
                    )
                    proc.kill()
                    proc.wait()
            self.say(f"stopped {launch.name} (exit code {proc.returncode})")


def banner(
    cfg: WardConfig,
    ports: Mapping[str, int],
    token: str,
    broker: str,
    creds: prov.Provisioned | None = None,
) -> str:
    h = cfg.http_host
    lines = [
        f"ward {cfg.ward}: {len(cfg.beds)} beds ({', '.join(cfg.beds)}) from {cfg.data_dir} "
        f"at {cfg.speed:g}x real time; broker {broker} on {cfg.mqtt_host}:{ports['mqtt']}",
        f"dashboard: http://{h}:{ports['alerting']}/?token={token}",
    ]
    if creds is not None:
        tls = f", TLS on :{ports['mqtt_tls']} (CA {creds.ca_file})" if broker == "mosquitto" else ""
        lines.append(
            f"broker:    authenticated, no anonymous access{tls}; "
            f"credentials in {creds.folder}/passwords (docs/security.md)"
        )
    for spec in HTTP_SERVICES:
        lines.append(f"metrics:   http://{h}:{ports[spec.name]}/metrics  ({spec.name})")
    lines.append(f"logs:      {cfg.run_dir}/*.log")
    lines.append("Ctrl-C stops the ward.")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None, env: Mapping[str, str]) -> WardConfig:
    p = argparse.ArgumentParser(prog="python scripts/ward.py", description=__doc__.split("\n")[0])
    p.add_argument(
        "--beds",
        default=env.get("WARD_BEDS"),
        help=f"comma-separated MIT-BIH records (default {','.join(DEFAULT_BEDS)})",
    )
    p.add_argument("--speed", type=float, default=float(env.get("WARD_SPEED", "1")))
    p.add_argument("--ward", default=env.get("ECG_WARD", DEFAULT_WARD))
    p.add_argument("--data-dir", default=env.get("ECG_DATA_DIR") or str(DEFAULT_DATA_DIR))
    p.add_argument(
        "--broker",
        choices=BROKER_MODES,
        default=env.get("WARD_BROKER", "auto"),
        help="auto: Mosquitto where installed, else the embedded amqtt broker",
    )
    p.add_argument("--mqtt-host", default=env.get("MQTT_HOST", "127.0.0.1"))
    p.add_argument("--mqtt-port", type=int, default=int(env.get("MQTT_PORT", MQTT_PORT)))
    p.add_argument(
        "--mqtt-tls-port", type=int, default=int(env.get("MQTT_TLS_PORT", MQTT_TLS_PORT))
    )
    p.add_argument("--http-host", default=env.get("WARD_HTTP_HOST", "127.0.0.1"))
    for spec in HTTP_SERVICES:
        p.add_argument(
            f"--{spec.name}-port",
            type=int,
            default=int(env[spec.port_env]) if spec.port_env and env.get(spec.port_env) else None,
        )
    p.add_argument(
        "--free-ports", action="store_true", help="pick free ports for the broker and every service"
    )
    p.add_argument("--token", default=env.get("ALERTING_TOKEN", ""))
    p.add_argument("--run-dir", default=env.get("WARD_RUN_DIR") or str(ROOT / "var" / "ward"))
    p.add_argument(
        "--secrets-dir",
        default=env.get("WARD_SECRETS_DIR") or None,
        help="the broker's credentials, made once and reused (default <run-dir>/secrets)",
    )
    p.add_argument("--startup-timeout", type=float, default=60.0)
    a = p.parse_args(list(argv) if argv is not None else None)
    ports = {
        s.name: getattr(a, f"{s.name}_port")
        for s in HTTP_SERVICES
        if getattr(a, f"{s.name}_port") is not None
    }
    beds = tuple(b.strip() for b in a.beds.split(",") if b.strip()) if a.beds else DEFAULT_BEDS
    return WardConfig(
        beds=beds,
        speed=a.speed,
        ward=a.ward,
        data_dir=Path(a.data_dir).expanduser(),
        broker=a.broker,
        mqtt_host=a.mqtt_host,
        mqtt_port=a.mqtt_port,
        mqtt_tls_port=a.mqtt_tls_port,
        http_host=a.http_host,
        ports=ports,
        free_ports=a.free_ports,
        token=a.token,
        run_dir=Path(a.run_dir),
        secrets_dir=Path(a.secrets_dir) if a.secrets_dir else None,
        startup_timeout_s=a.startup_timeout,
    )


def take_terminal() -> Callable[[], None]:
    """Become the terminal's foreground process group, so Ctrl-C reaches the ward alone.

    Under `make ward`, make would otherwise get the SIGINT too and report an interrupt whatever
    the ward does; this way the ward stops its children and the command exits 0. Returns the
    function that hands the terminal back. A no-op without a terminal or in the background.
    """
    try:
        fd = sys.stdin.fileno()
        if not os.isatty(fd) or os.tcgetpgrp(fd) != os.getpgrp():
            return lambda: None
        previous = os.tcgetpgrp(fd)
        os.setpgid(0, 0)
        ttou = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
        os.tcsetpgrp(fd, os.getpgrp())
        tstp = signal.signal(signal.SIGTSTP, signal.SIG_IGN)  # a stopped ward would hang make
    except (OSError, ValueError):
        return lambda: None

    def give_back() -> None:
        try:
            os.tcsetpgrp(fd, previous)
        except OSError:
            pass
        signal.signal(signal.SIGTTOU, ttou)
        signal.signal(signal.SIGTSTP, tstp)

    return give_back


def main(argv: list[str] | None = None) -> int:
    try:
        cfg = parse_args(argv, os.environ)
    except ValueError as exc:
        print(f"ward: {exc}", file=sys.stderr)
        return 2
    missing = missing_records(cfg.data_dir, cfg.beds)
    if missing:
        print(
            f"ward: MIT-BIH records {', '.join(missing)} are not in {cfg.data_dir}.\n"
            "Fetch the database from PhysioNet (about 100 MB, needs internet):\n"
            f"    .venv/bin/python -m ecgcommon.fetch --data-dir {cfg.data_dir}\n"
            "or point ECG_DATA_DIR (make: DATA_DIR=) at a folder that holds it.",
            file=sys.stderr,
        )
        return 2
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    token = cfg.token or secrets.token_urlsafe(18)
    ports = resolve_ports(cfg)
    busy = busy_ports(cfg, ports)
    if busy:
        print(
            f"ward: in use already: {', '.join(busy)}. Stop what holds them, choose ports "
            "(MQTT_PORT, DETECTOR_HTTP_PORT, ALERTING_PORT, STREAMER_HTTP_PORT) or run with "
            "--free-ports.",
            file=sys.stderr,
        )
        return 2
    try:
        creds = provision_ward(cfg) if cfg.broker != "external" else None
        launches = plan(cfg, ports, token, creds)
    except (RuntimeError, OSError) as exc:  # ProvisionError is a RuntimeError
        print(f"ward: {exc}", file=sys.stderr)
        return 2
    broker = launches[0].name if launches and launches[0].listens else "external"
    if broker == "amqtt":
        print(
            "ward: WARNING: Mosquitto is not installed; the embedded amqtt broker checks the "
            "passwords and topic rules but cannot protect client ids (a credential holder can "
            "disconnect another client) and has no TLS listener. Install Mosquitto "
            "(make system-deps) for the secure ward.",
            file=sys.stderr,
        )
    if broker == "external":
        print(
            "ward: the external broker's authentication and ACL are yours to set "
            "(python -m ecgcommon.provision; docs/security.md); the services connect anonymously.",
            file=sys.stderr,
        )
    ward = Ward(cfg)

    def request_stop(signum: int, _frame: object) -> None:
        ward.stop_requested = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    give_back_terminal = take_terminal()
    code = 0
    try:
        ward.start(launches)
        if not ward.stop_requested:
            ward.say(banner(cfg, ports, token, broker, creds))
            died = ward.watch()
            if died is not None:
                ward.say(f"ward: {died} exited unexpectedly:\n{ward.log_tail(died)}")
                code = 1
    except RuntimeError as exc:
        ward.say(f"ward: {exc}")
        code = 1
    finally:
        ward.say("stopping the ward")
        ward.stop()
        give_back_terminal()
    return code


if __name__ == "__main__":
    raise SystemExit(main())
