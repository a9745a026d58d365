"""Broker credentials for a ward: CA, server certificate, accounts, password and ACL files.

`python -m ecgcommon.provision --out .secrets/ward --ward ward-a --bed-count 8` writes, into a
private folder (docs/security.md):

- `ca.crt`, `ca.key`: a self-signed CA; `server.crt`, `server.key`: the broker's TLS certificate
  (names in `--hostname`, default localhost, mosquitto and 127.0.0.1), made with the openssl CLI;
- one account per device (username `dev-{ward}-{bed}`, random password) and per service
  instance (`detector`, `alerting`, `healthcheck`, and `observer`, which reads results and
  alarms but no raw ECG; more with `--service NAME=ROLE`, e.g. a second detector);
- `passwords/{username}`: each account's password alone on one line (a service's
  MQTT_PASSWORD_FILE); `streamer-devices.json`: the simulated devices' credentials;
- `mosquitto.passwd` (PBKDF2-SHA512 `$7$` hashes, as `mosquitto_passwd` writes them) and
  `mosquitto.acl` (one `user` block per account: a device may write only its own bed's topics).

Files holding a secret are mode 0600. Running it again reuses what exists (CA, certificate,
passwords) and adds what is missing, so a new bed can be added to a running ward (then send the
broker SIGHUP). Passwords are never printed or logged.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ecgcommon.topics import DEFAULT_WARD, PREFIX, VERSION

DEFAULT_OUT = Path(".secrets") / "ward"
ROLES = ("device", "detector", "alerting", "observer", "healthcheck")
SERVICE_ROLES = ROLES[1:]
# `observer`: for people watching results by hand (mosquitto_sub) without taking over a
# service's connection: one username is one connection (use_username_as_clientid).
DEFAULT_SERVICES: tuple[tuple[str, str], ...] = tuple(
    (r, r) for r in ("detector", "alerting", "observer", "healthcheck")
)
DEFAULT_HOSTNAMES: tuple[str, ...] = ("localhost", "mosquitto", "127.0.0.1")
# Ward, bed and account names: letters, digits, '.', '_', '-' (the same rule as
# ecgcommon.limits.NAME_PATTERN): safe as one topic level, an ACL line and a file name.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_HOST = re.compile(r"[A-Za-z0-9*][A-Za-z0-9.:*-]{0,252}")
PBKDF2_ITERATIONS = 101  # mosquitto_passwd's default; the passwords are 192-bit random
SALT_BYTES = 12  # as mosquitto_passwd
PASSWORD_BYTES = 24


class ProvisionError(RuntimeError):
    """Provisioning could not be done (bad name, openssl failed, unreadable folder)."""


@dataclass(frozen=True)
class Account:
    """One MQTT identity: a device bound to one bed, or a service instance with a role."""

    username: str
    role: str
    ward: str = ""  # devices only
    bed: str = ""  # devices only

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ProvisionError(f"role must be one of {ROLES}, got {self.role!r}")
        _check_name("username", self.username)
        if self.role == "device":
            _check_name("ward", self.ward)
            _check_name("bed", self.bed)
        elif self.ward or self.bed:
            raise ProvisionError(f"{self.username}: only a device account has a ward and bed")


def _check_name(what: str, value: str) -> None:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise ProvisionError(
            f"{what} {value!r} must be 1-64 letters, digits, '.', '_' or '-' "
            "(starting with a letter or digit)"
        )


def device_username(ward: str, bed: str) -> str:
    """The username (and so the MQTT client id) of the device at `ward`/`bed`."""
    return f"dev-{ward}-{bed}"


def device(ward: str, bed: str) -> Account:
    return Account(device_username(ward, bed), "device", ward, bed)


def bed_names(n_beds: int) -> list[str]:
    """Bed names "01", "02", ... as the streamer numbers its simulated beds."""
    width = max(2, len(str(n_beds)))
    return [str(1 + i).zfill(width) for i in range(n_beds)]


def _t(ward: str, bed: str, kind: str) -> str:
    return f"{PREFIX}/{VERSION}/{ward}/{bed}/{kind}"


def acl_rules(account: Account) -> list[tuple[str, str]]:
    """(access, topic) pairs the account gets; everything else is denied by the broker."""
    if account.role == "device":  # its own bed's data and status, nothing to read
        return [
            ("write", _t(account.ward, account.bed, "samples")),
            ("write", _t(account.ward, account.bed, "status")),
        ]
    if account.role == "detector":
        return [
            ("read", _t("+", "+", "samples")),
            ("read", _t("+", "+", "status")),
            ("write", _t("+", "+", "beats")),
            ("write", _t("+", "+", "events")),
        ]
    if account.role == "alerting":  # samples: the dashboard draws the waveforms
        return [
            ("read", _t("+", "+", "samples")),
            ("read", _t("+", "+", "beats")),
            ("read", _t("+", "+", "events")),
            ("read", _t("+", "+", "status")),
            ("write", _t("+", "+", "alarms")),
        ]
    if account.role == "observer":  # e.g. a nurse-call gateway: results only, no raw ECG
        return [
            ("read", _t("+", "+", "beats")),
            ("read", _t("+", "+", "events")),
            ("read", _t("+", "+", "status")),
            ("read", _t("+", "+", "alarms")),
        ]
    return [("read", "$SYS/broker/uptime")]  # healthcheck: is the broker up, nothing else


def render_acl(accounts: Iterable[Account]) -> str:
    """Mosquitto's `acl_file`: no rule before the first `user` line, so anonymous gets nothing."""
    lines = [
        "# Written by `python -m ecgcommon.provision`; edit the accounts there, not here.",
        "# One block per account; a topic not listed is denied (docs/security.md).",
    ]
    for account in sorted(accounts, key=lambda a: a.username):
        where = f" {account.ward}/{account.bed}" if account.role == "device" else ""
        lines += ["", f"# {account.role}{where}"]
        lines.append(f"user {account.username}")
        lines += [f"topic {access} {topic}" for access, topic in acl_rules(account)]
    return "\n".join(lines) + "\n"


def mosquitto_hash(password: str, salt: bytes | None = None) -> str:
    """A `$7$` PBKDF2-SHA512 hash as Mosquitto 2's password_file reads it."""
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, PBKDF2_ITERATIONS)
    b64 = base64.b64encode
    return f"$7${PBKDF2_ITERATIONS}${b64(salt).decode()}${b64(digest).decode()}"


def render_passwd(passwords: dict[str, str]) -> str:
    return "".join(f"{user}:{mosquitto_hash(pw)}\n" for user, pw in sorted(passwords.items()))


def mosquitto_conf(
    folder: Path,
    host: str,
    port: int,
    tls_host: str | None = None,
    tls_port: int | None = None,
    user: str | None = None,
) -> str:
    """A Mosquitto 2 config using the provisioned files: no anonymous access, every client id
    replaced by its username (so no one can take over another client's id), a plain listener
    (loopback or an internal network) and a TLS listener signed by the provisioned CA.
    `user`: the account Mosquitto runs as when started as root (it drops to `mosquitto`
    otherwise, which cannot read files provisioned 0600 by another user)."""
    folder = Path(folder).resolve()
    lines = [
        "# Written from ecgcommon.provision.mosquitto_conf (docs/security.md).",
        "per_listener_settings false",
        *([f"user {user}"] if user else []),
        "allow_anonymous false",
        f"password_file {folder / 'mosquitto.passwd'}",
        f"acl_file {folder / 'mosquitto.acl'}",
        "persistence false",
        "max_queued_messages 100000",
        "max_packet_size 1048576",
        f"listener {port} {host}",
        "use_username_as_clientid true",
    ]
    if tls_port is not None:
        lines += [
            f"listener {tls_port} {tls_host or host}",
            "use_username_as_clientid true",
            f"cafile {folder / 'ca.crt'}",
            f"certfile {folder / 'server.crt'}",
            f"keyfile {folder / 'server.key'}",
            "tls_version tlsv1.2",
        ]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class ProvisionConfig:
    """What to provision; errors name the bad field."""

    out: Path = DEFAULT_OUT
    ward: str = DEFAULT_WARD
    beds: tuple[str, ...] = tuple(bed_names(8))
    services: tuple[tuple[str, str], ...] = DEFAULT_SERVICES  # (username, role)
    hostnames: tuple[str, ...] = ()  # names/IPs in the server cert; () = as before, or default
    revoke: tuple[str, ...] = ()  # usernames to remove
    ca_days: int = 3650
    cert_days: int = 825
    broker_owner: tuple[int, int] | None = None  # uid, gid of the broker's files (containers)
    service_owner: tuple[int, int] | None = None  # uid, gid of the services' password files

    def __post_init__(self) -> None:
        _check_name("ward", self.ward)
        for bed in self.beds:
            _check_name("bed", bed)
        for username, role in self.services:
            _check_name("service username", username)
            if role not in SERVICE_ROLES:
                raise ProvisionError(f"services: role must be one of {SERVICE_ROLES}, got {role!r}")
        for host in self.hostnames:
            if not _HOST.fullmatch(host):
                raise ProvisionError(f"hostnames: {host!r} is not a host name or IP address")
        for name in ("ca_days", "cert_days"):
            if not 1 <= getattr(self, name) <= 36500:
                raise ProvisionError(f"{name} must be 1..36500 days, got {getattr(self, name)}")


@dataclass(frozen=True)
class Provisioned:
    """Where the provisioned files are (see the module docstring)."""

    folder: Path
    accounts: tuple[Account, ...] = field(default=())

    @property
    def ca_file(self) -> Path:
        return self.folder / "ca.crt"

    @property
    def server_cert(self) -> Path:
        return self.folder / "server.crt"

    @property
    def server_key(self) -> Path:
        return self.folder / "server.key"

    @property
    def passwd_file(self) -> Path:
        return self.folder / "mosquitto.passwd"

    @property
    def acl_file(self) -> Path:
        return self.folder / "mosquitto.acl"

    @property
    def streamer_devices(self) -> Path:
        return self.folder / "streamer-devices.json"

    def password_file(self, username: str) -> Path:
        _check_name("username", username)
        return self.folder / "passwords" / username

    def password(self, username: str) -> str:
        """The account's password (tests and the ward's launcher; never logged)."""
        return self.password_file(username).read_text().strip()

    def account(self, username: str) -> Account:
        for account in self.accounts:
            if account.username == username:
                return account
        raise KeyError(username)


def _write(path: Path, text: str, mode: int, owner: tuple[int, int] | None = None) -> None:
    """Replace `path` atomically with `text`, created with `mode` from the start."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        if owner is not None:
            os.fchown(fd, *owner)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _openssl(args: Sequence[str], cwd: Path) -> None:
    binary = shutil.which("openssl")
    if binary is None:
        raise ProvisionError("the openssl command is needed to make the CA and certificate")
    done = subprocess.run(
        [binary, *args], cwd=cwd, capture_output=True, text=True, umask=0o077, check=False
    )
    if done.returncode != 0:
        raise ProvisionError(f"openssl {args[0]} failed: {done.stderr.strip()[-500:]}")


def _make_ca(folder: Path, days: int) -> None:
    _openssl(
        [
            "req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", str(days),
            "-subj", "/CN=ECG ward monitor CA",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        ],
        folder,
    )  # fmt: skip


def _san(hostnames: Sequence[str]) -> str:
    ip = re.compile(r"^[0-9.]+$|:")
    return ",".join(f"IP:{h}" if ip.search(h) else f"DNS:{h}" for h in hostnames)


def _make_server_cert(folder: Path, hostnames: Sequence[str], days: int) -> None:
    ext = folder / "server.ext"
    ext.write_text(
        f"subjectAltName={_san(hostnames)}\nbasicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
    )
    try:
        _openssl(
            [
                "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                "-nodes", "-keyout", "server.key", "-out", "server.csr",
                "-subj", f"/CN={hostnames[0]}",
            ],
            folder,
        )  # fmt: skip
        _openssl(
            [
                "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                "-set_serial", f"0x{secrets.token_hex(16)}", "-days", str(days),
                "-out", "server.crt", "-extfile", "server.ext",
            ],
            folder,
        )  # fmt: skip
    finally:
        for name in ("server.csr", "server.ext"):
            with contextlib.suppress(OSError):
                (folder / name).unlink()


MANIFEST = "accounts.json"


def _load_manifest(folder: Path) -> tuple[list[Account], list[str]]:
    path = folder / MANIFEST
    if not path.is_file():
        return [], []
    try:
        data = json.loads(path.read_text())
        accounts = [Account(**a) for a in data["accounts"]]
        return accounts, [str(h) for h in data.get("hostnames", [])]
    except (ValueError, KeyError, TypeError) as exc:
        raise ProvisionError(f"{path} is not a provisioning manifest: {exc}") from exc


def provision(cfg: ProvisionConfig) -> Provisioned:
    """Create or update the folder; returns where everything is. Idempotent."""
    folder = Path(cfg.out)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(folder, 0o700 if cfg.broker_owner is None else 0o755)
    (folder / "passwords").mkdir(exist_ok=True, mode=0o700)
    os.chmod(folder / "passwords", 0o700 if cfg.broker_owner is None else 0o755)
    known, old_hosts = _load_manifest(folder)
    wanted = [device(cfg.ward, bed) for bed in cfg.beds]
    wanted += [Account(user, role) for user, role in cfg.services]
    accounts: dict[str, Account] = {a.username: a for a in known}
    for account in wanted:
        if account.username in accounts and accounts[account.username] != account:
            raise ProvisionError(f"{account.username} exists already with another role or bed")
        accounts[account.username] = account
    for username in cfg.revoke:
        accounts.pop(username, None)
        with contextlib.suppress(FileNotFoundError):
            (folder / "passwords" / username).unlink()

    if not ((folder / "ca.key").is_file() and (folder / "ca.crt").is_file()):
        _make_ca(folder, cfg.ca_days)
    hosts = list(cfg.hostnames or old_hosts or DEFAULT_HOSTNAMES)
    if not (folder / "server.crt").is_file() or sorted(hosts) != sorted(old_hosts):
        _make_server_cert(folder, hosts, cfg.cert_days)
    os.chmod(folder / "ca.crt", 0o644)
    os.chmod(folder / "server.crt", 0o644)
    os.chmod(folder / "ca.key", 0o600)
    os.chmod(folder / "server.key", 0o600)
    if cfg.broker_owner is not None:
        os.chown(folder / "server.key", *cfg.broker_owner)

    result = Provisioned(folder, tuple(sorted(accounts.values(), key=lambda a: a.username)))
    passwords: dict[str, str] = {}
    for account in result.accounts:
        path = result.password_file(account.username)
        password = path.read_text().strip() if path.is_file() else ""
        if not password:
            password = secrets.token_urlsafe(PASSWORD_BYTES)
        passwords[account.username] = password
        owner = cfg.broker_owner if account.role == "healthcheck" else cfg.service_owner
        _write(path, password + "\n", 0o600, owner)
    _write(result.passwd_file, render_passwd(passwords), 0o600, cfg.broker_owner)
    _write(result.acl_file, render_acl(result.accounts), 0o600, cfg.broker_owner)
    devices: dict[str, dict[str, dict[str, str]]] = {}
    for a in result.accounts:
        if a.role == "device":
            entry = {"username": a.username, "password": passwords[a.username]}
            devices.setdefault(a.ward, {})[a.bed] = entry
    _write(
        result.streamer_devices,
        json.dumps({"devices": devices}, indent=1, sort_keys=True) + "\n",
        0o600,
        cfg.service_owner,
    )
    manifest = {
        "accounts": [vars(a) for a in result.accounts],
        "hostnames": hosts,
    }
    _write(folder / MANIFEST, json.dumps(manifest, indent=1) + "\n", 0o644)
    return result


def load(folder: Path) -> Provisioned:
    """The accounts of an already provisioned folder (ProvisionError if there is none)."""
    accounts, _ = _load_manifest(Path(folder))
    if not accounts:
        raise ProvisionError(
            f"{folder} holds no provisioned accounts (python -m ecgcommon.provision)"
        )
    return Provisioned(Path(folder), tuple(accounts))


def _owner(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    try:
        uid, _, gid = text.partition(":")
        return int(uid), int(gid or uid)
    except ValueError:
        raise ProvisionError(f"owner must be UID:GID, got {text!r}") from None


def parse_args(argv: Sequence[str] | None) -> ProvisionConfig:
    p = argparse.ArgumentParser(
        prog="python -m ecgcommon.provision", description=__doc__.split("\n")[0]
    )
    p.add_argument("--out", default=str(DEFAULT_OUT), help=f"folder (default {DEFAULT_OUT})")
    p.add_argument("--ward", default=os.environ.get("ECG_WARD", DEFAULT_WARD))
    p.add_argument(
        "--beds",
        help="comma-separated bed names, one device account each (default, in a new folder: "
        "01..08)",
    )
    p.add_argument("--bed-count", type=int, help="beds 01..N, as the streamer numbers them")
    p.add_argument(
        "--service",
        action="append",
        default=[],
        metavar="NAME=ROLE",
        help=f"one more service instance (roles {', '.join(SERVICE_ROLES)}), "
        "e.g. detector-2=detector",
    )
    p.add_argument(
        "--hostname",
        action="append",
        default=[],
        help="a name or IP the broker is reached by (TLS certificate); repeat; default: the "
        f"previous run's, else {', '.join(DEFAULT_HOSTNAMES)}",
    )
    p.add_argument("--revoke", action="append", default=[], metavar="USERNAME")
    p.add_argument("--broker-owner", help="UID:GID owning the broker's files (container setups)")
    p.add_argument("--service-owner", help="UID:GID owning the services' password files")
    a = p.parse_args(list(argv) if argv is not None else None)
    if a.beds and a.bed_count:
        raise ProvisionError("give --beds or --bed-count, not both")
    if a.bed_count is not None and not 0 <= a.bed_count <= 100_000:
        raise ProvisionError(f"bed-count must be 0..100000, got {a.bed_count}")
    if a.beds:
        beds = tuple(b.strip() for b in a.beds.split(",") if b.strip())
    elif a.bed_count is not None:
        beds = tuple(bed_names(a.bed_count))
    elif (Path(a.out) / MANIFEST).is_file():
        beds = ()  # adding a service or revoking an account adds no bed
    else:
        beds = ProvisionConfig.beds
    services = list(DEFAULT_SERVICES)
    for spec in a.service:
        name, sep, role = spec.partition("=")
        if not sep:
            raise ProvisionError(f"--service wants NAME=ROLE, got {spec!r}")
        services.append((name.strip(), role.strip()))
    return ProvisionConfig(
        out=Path(a.out),
        ward=a.ward,
        beds=beds,
        services=tuple(dict.fromkeys(services)),
        hostnames=tuple(a.hostname),
        revoke=tuple(a.revoke),
        broker_owner=_owner(a.broker_owner),
        service_owner=_owner(a.service_owner),
    )


def main(argv: Sequence[str] | None = None) -> int:
    try:
        result = provision(parse_args(argv))
    except (ProvisionError, OSError) as exc:
        print(f"provision: {exc}", file=sys.stderr)
        return 2
    roles: dict[str, int] = {}
    for a in result.accounts:
        roles[a.role] = roles.get(a.role, 0) + 1
    print(
        f"provisioned {result.folder}: " + ", ".join(f"{n} {r}" for r, n in sorted(roles.items()))
    )
    print(f"  CA {result.ca_file}; broker: {result.passwd_file}, {result.acl_file}")
    print(f"  each account's password: {result.folder / 'passwords'}/<username> (mode 0600)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
