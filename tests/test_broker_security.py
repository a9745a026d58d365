"""The broker itself enforces who may speak for a bed: a real Mosquitto running the password,
ACL and TLS files that `python -m ecgcommon.provision` writes (docs/security.md).

Refusals are observed where they matter: a subscriber holding the right credential sees nothing
arrive. Each test publishes its forged messages first and an allowed one last on the same
connection; the broker keeps one publisher's order, so once the allowed one arrives, nothing
forged is still on its way.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import stat
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode
from prometheus_client import CollectorRegistry

from ecgcommon import provision as prov
from ecgcommon.mqtt_auth import load_device_credentials, read_password
from ecgcommon.settings import MqttSettings
from tests.helpers.broker import SecureBroker
from tests.helpers.waits import wait_until

WAIT_S = 10.0  # bound on every wait for something that must arrive


class Client:
    """A paho client connected with a credential (or none), recording what it receives."""

    def __init__(
        self,
        sb: SecureBroker,
        username: str | None,
        password: str | None = None,
        client_id: str = "",
        tls_ca: str | None = None,
        v5: bool = True,
        will: tuple[str, bytes] | None = None,
    ) -> None:
        self.protocol = mqtt.MQTTv5 if v5 else mqtt.MQTTv311
        self.c = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"t-{uuid.uuid4().hex[:8]}",
            protocol=self.protocol,
        )
        if username is not None:
            self.c.username_pw_set(
                username, password if password is not None else sb.creds.password(username)
            )
        if tls_ca is not None:
            self.c.tls_set(ca_certs=tls_ca)
        if will is not None:
            self.c.will_set(will[0], will[1], qos=1)
        self.got: list[tuple[str, bytes]] = []
        self.arrived = threading.Condition()
        self.connack: ReasonCode | None = None
        self.connack_event = threading.Event()
        self.disconnected = threading.Event()
        self.suback: list[ReasonCode] = []
        self.subscribed = threading.Event()
        self.puback: dict[int, ReasonCode] = {}
        self.c.on_connect = self._on_connect
        self.c.on_disconnect = lambda *_a: self.disconnected.set()
        self.c.on_message = self._on_message
        self.c.on_subscribe = self._on_subscribe
        self.c.on_publish = self._on_publish
        port = sb.tls_port if tls_ca is not None else sb.port
        self.c.connect("localhost" if tls_ca is not None else sb.host, port, keepalive=30)
        self.c.loop_start()

    def _on_connect(self, _c: object, _u: object, _f: object, rc: ReasonCode, _p: object) -> None:
        self.connack = rc
        self.connack_event.set()

    def _on_message(self, _c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        with self.arrived:
            self.got.append((msg.topic, bytes(msg.payload)))
            self.arrived.notify_all()

    def _on_subscribe(self, _c: object, _u: object, _mid: int, rcs: list, _p: object) -> None:
        self.suback = list(rcs)
        self.subscribed.set()

    def _on_publish(self, _c: object, _u: object, mid: int, rc: ReasonCode, _p: object) -> None:
        self.puback[mid] = rc

    def connected(self) -> bool:
        assert self.connack_event.wait(WAIT_S), "no CONNACK"
        assert self.connack is not None
        return not self.connack.is_failure

    def subscribe(self, *filters: str) -> list[ReasonCode]:
        self.subscribed.clear()
        self.c.subscribe([(f, 1) for f in filters])
        assert self.subscribed.wait(WAIT_S), "no SUBACK"
        return self.suback

    def publish(self, topic: str, payload: bytes) -> ReasonCode | None:
        """QoS 1; the broker's PUBACK reason (MQTT 5 says 'Not authorized' for a refusal)."""
        info = self.c.publish(topic, payload, qos=1)
        info.wait_for_publish(WAIT_S)
        return self.puback.get(info.mid)

    def wait_for(self, payload: bytes, timeout: float = WAIT_S) -> bool:
        with self.arrived:
            return self.arrived.wait_for(lambda: any(p == payload for _, p in self.got), timeout)

    def payloads(self) -> set[bytes]:
        with self.arrived:
            return {p for _, p in self.got}

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


@pytest.fixture
def clients() -> Iterator[list[Client]]:
    made: list[Client] = []
    yield made
    for c in made:
        c.close()


def t(sb: SecureBroker, bed: str, kind: str) -> str:
    return f"ecg/v1/{sb.ward}/{bed}/{kind}"


def dev(bed: str) -> str:
    return prov.device_username("ward-sec", bed)


def tag() -> bytes:
    return uuid.uuid4().hex.encode()


# ---------------------------------------------------------------------------------- the files


def test_provisioned_files_are_private_and_in_mosquitto_formats(tmp_path: Path) -> None:
    out = tmp_path / "secrets"
    done = subprocess.run(
        [
            *(sys.executable, "-m", "ecgcommon.provision"),
            *("--out", str(out), "--ward", "ward-x", "--bed-count", "3"),
            *("--service", "detector-2=detector"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    creds = prov.load(out)
    users = {a.username for a in creds.accounts}
    assert users == {
        "dev-ward-x-01",
        "dev-ward-x-02",
        "dev-ward-x-03",
        "detector",
        "detector-2",
        "alerting",
        "observer",
        "healthcheck",
    }
    for name in users:  # never printed
        assert creds.password(name) not in done.stdout + done.stderr
    secret = [creds.folder / "ca.key", creds.server_key, creds.passwd_file, creds.acl_file]
    secret += [creds.streamer_devices, *(creds.password_file(u) for u in users)]
    for path in secret:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    # password_file: `user:$7$101$salt$hash`, the hash mosquitto_passwd computes
    lines = dict(ln.split(":", 1) for ln in creds.passwd_file.read_text().splitlines())
    assert set(lines) == users
    _, seven, iterations, salt, digest = lines["detector"].split("$")
    assert (seven, iterations) == ("7", "101")
    again = prov.mosquitto_hash(creds.password("detector"), base64.b64decode(salt))
    assert again == lines["detector"]
    # acl_file: one user block per account; a device writes its own bed's two topics only
    acl = creds.acl_file.read_text()
    assert acl.count("\nuser ") == len(users)
    block = acl.split("user dev-ward-x-02\n")[1].split("\n\n")[0].splitlines()
    assert block == ["topic write ecg/v1/ward-x/02/samples", "topic write ecg/v1/ward-x/02/status"]
    rules = [ln.split()[0] for ln in acl.splitlines() if ln and not ln.startswith("#")]
    assert rules[0] == "user" and set(rules) == {"user", "topic"}  # nothing for anonymous
    # the streamer's devices file holds exactly those devices' credentials
    devices = load_device_credentials(creds.streamer_devices)
    assert devices[("ward-x", "03")] == ("dev-ward-x-03", creds.password("dev-ward-x-03"))
    assert read_password(creds.password_file("alerting")) == creds.password("alerting")

    # Again, with one more bed and one revoked: old secrets are kept, the CA is not remade.
    before = {u: creds.password(u) for u in users}
    ca = creds.ca_file.read_bytes()
    assert prov.main(["--out", str(out), "--ward", "ward-x", "--beds", "04", "--revoke",
                      "dev-ward-x-01"]) == 0  # fmt: skip
    after = prov.load(out)
    names = {a.username for a in after.accounts}
    assert "dev-ward-x-04" in names and "dev-ward-x-01" not in names
    assert not after.password_file("dev-ward-x-01").exists()
    assert all(after.password(u) == before[u] for u in names if u in before)
    assert after.ca_file.read_bytes() == ca
    assert "dev-ward-x-01" not in after.passwd_file.read_text()
    # A service added later: no default beds appear, the certificate's names are kept.
    cert = after.server_cert.read_bytes()
    assert prov.main(["--out", str(out), "--service", "nursecall=observer"]) == 0
    last = prov.load(out)
    assert {a.username for a in last.accounts} == names | {"nursecall"}
    assert last.server_cert.read_bytes() == cert


def test_provision_refuses_names_that_could_escape_an_acl_line(tmp_path: Path) -> None:
    for bed in ("a b", "+", "#", "x/y", "", "a\nuser detector"):
        with pytest.raises(prov.ProvisionError, match="bed"):
            prov.ProvisionConfig(out=tmp_path, beds=(bed,))
    with pytest.raises(prov.ProvisionError, match="role"):
        prov.ProvisionConfig(out=tmp_path, services=(("x", "device"),))


def test_provision_numbers_beds_as_the_streamer_does() -> None:
    from streamer.core import bed_names

    for n in (1, 8, 99, 100, 1000):
        assert prov.bed_names(n) == bed_names(n)


# ---------------------------------------------------------------------------------- the broker


def test_anonymous_and_wrong_passwords_are_refused(secure_broker: SecureBroker, clients) -> None:
    sb = secure_broker
    for v5 in (True, False):
        anonymous = Client(sb, None, v5=v5)
        clients.append(anonymous)
        assert not anonymous.connected()
        wrong = Client(sb, dev("01"), "not-the-password", v5=v5)
        clients.append(wrong)
        assert not wrong.connected()
        other = Client(sb, dev("01"), sb.creds.password(dev("02")), v5=v5)
        clients.append(other)
        assert not other.connected()
    assert str(anonymous.connack) in ("Not authorized", "Bad user name or password")
    right = Client(sb, dev("01"))
    clients.append(right)
    assert right.connected()


def test_a_device_speaks_only_for_its_own_bed(secure_broker: SecureBroker, clients) -> None:
    """Device 01 cannot publish bed 02's samples or status, nor beats, events or alarms, even
    for its own bed; the accounts that read those topics see nothing but its own data."""
    sb = secure_broker
    detector = Client(sb, "detector")  # reads samples and status
    alerting = Client(sb, "alerting")  # reads samples, beats, events, status
    observer = Client(sb, "observer")  # reads beats, events, status, alarms
    device = Client(sb, dev("01"))
    clients.extend([detector, alerting, observer, device])
    assert all(c.connected() for c in clients)
    kinds = ("samples", "status")
    assert not any(r.is_failure for r in detector.subscribe(*(t(sb, "+", k) for k in kinds)))
    kinds = ("samples", "beats", "events", "status")
    assert not any(r.is_failure for r in alerting.subscribe(*(t(sb, "+", k) for k in kinds)))
    kinds = ("beats", "events", "status", "alarms")
    assert not any(r.is_failure for r in observer.subscribe(*(t(sb, "+", k) for k in kinds)))

    forged = {
        t(sb, "02", "samples"): tag(),
        t(sb, "02", "status"): tag(),
        t(sb, "01", "beats"): tag(),
        t(sb, "01", "events"): tag(),
        t(sb, "01", "alarms"): tag(),
        t(sb, "02", "beats"): tag(),
        "ecg/v1/ward-other/01/samples": tag(),
    }
    for topic, payload in forged.items():
        reason = device.publish(topic, payload)
        assert reason is not None and reason.value == 0x87, f"{topic}: {reason}"  # Not authorized
    own_samples, own_status = tag(), tag()
    assert device.publish(t(sb, "01", "samples"), own_samples).value == 0  # positive control
    assert device.publish(t(sb, "01", "status"), own_status).value == 0
    assert detector.wait_for(own_status) and alerting.wait_for(own_status)
    assert observer.wait_for(own_status)
    assert own_samples in detector.payloads() and own_samples in alerting.payloads()
    for reader in (detector, alerting, observer):
        assert not reader.payloads() & set(forged.values())


def test_a_device_reads_nothing(secure_broker: SecureBroker, clients) -> None:
    """Mosquitto grants a device's subscription to `#` but delivers it nothing: reads are
    checked per message. What others publish meanwhile reaches the accounts that may read it."""
    sb = secure_broker
    snoop = Client(sb, dev("02"))
    detector = Client(sb, "detector")
    observer = Client(sb, "observer")
    other = Client(sb, dev("03"))
    clients.extend([snoop, detector, observer, other])
    assert all(c.connected() for c in clients)
    snoop.subscribe("#", t(sb, "+", "samples"), t(sb, "02", "samples"), "$SYS/#")
    detector.subscribe(t(sb, "03", "samples"))
    observer.subscribe(t(sb, "+", "beats"), t(sb, "+", "status"))
    sent = [tag(), tag(), tag()]
    assert other.publish(t(sb, "03", "samples"), sent[0]).value == 0
    assert other.publish(t(sb, "03", "status"), sent[1]).value == 0
    assert detector.publish(t(sb, "02", "beats"), sent[2]).value == 0  # about the snoop's bed
    assert detector.wait_for(sent[0]) and observer.wait_for(sent[1])
    assert observer.wait_for(sent[2])
    # A round trip on the snoop's own connection: whatever the broker had queued for it by
    # now arrives before this PUBACK.
    assert snoop.publish(t(sb, "02", "status"), tag()).value == 0
    assert snoop.got == []


def test_service_and_device_ids_cannot_be_taken_over(
    secure_broker: SecureBroker, clients, tmp_path: Path
) -> None:
    """Connecting with the detector's client id (and a device credential, or none) does not
    disconnect the real detector service; connecting with device 01's id does not fire its
    last will. The broker names every client by its username."""
    from detector.anomaly import AnomalyConfig
    from detector.config import DetectorConfig
    from detector.scorer import OnnxScorer
    from detector.service import DetectorService

    sb = secure_broker
    model_dir = os.environ.get("DETECTOR_MODEL_DIR") or DetectorConfig.model_dir
    scorer = OnnxScorer(model_dir)
    svc = DetectorService(
        DetectorConfig(
            mqtt=MqttSettings(
                host="localhost",
                port=sb.tls_port,  # the detector over TLS with the provisioned CA
                client_id="detector",
                username="detector",
                password_file=str(sb.creds.password_file("detector")),
                ca_file=str(sb.creds.ca_file),
            ),
            ward=sb.ward,
            http_host="127.0.0.1",
            http_port=0,
            model_dir=model_dir,
        ),
        registry=CollectorRegistry(),
        scorer=scorer,
        anomaly=AnomalyConfig.from_manifest(scorer.manifest),
    )
    svc.start()
    try:
        assert svc.connected.wait(WAIT_S)
        offline = json.dumps({"state": "offline", "t": 0}).encode()
        victim = Client(sb, dev("01"), client_id=dev("01"), will=(t(sb, "01", "status"), offline))
        observer = Client(sb, "observer")
        clients.extend([victim, observer])
        assert victim.connected() and observer.connected()
        observer.subscribe(t(sb, "01", "status"))
        anonymous = Client(sb, None, client_id="detector")
        clients.append(anonymous)
        assert not anonymous.connected()
        thief = Client(sb, dev("02"), client_id="detector")
        kicker = Client(sb, dev("03"), client_id=dev("01"))
        clients.extend([thief, kicker])
        assert thief.connected() and kicker.connected()  # but under their own names
        assert thief.publish(t(sb, "02", "beats"), tag()).value == 0x87
        # The real ones are still there: the detector receives a chunk (its counter moves);
        # the victim device was not disconnected and its will did not fire.
        before = _metric(svc, "ecg_detector_messages_total")
        sender = Client(sb, dev("03"))
        clients.append(sender)
        assert sender.connected()
        sender.publish(t(sb, "03", "samples"), b"not a chunk")
        wait_until(
            lambda: _metric(svc, "ecg_detector_messages_total") > before,
            WAIT_S,
            "the detector receiving the chunk",
        )
        sentinel = tag()
        assert victim.publish(t(sb, "01", "status"), sentinel).value == 0
        assert observer.wait_for(sentinel)
        assert offline not in observer.payloads()
        assert not victim.disconnected.is_set()
        assert svc.connected.is_set()
        log = sb.log.read_text(errors="replace")
        assert "as detector (" in log and f"as {dev('02')} (" in log
        assert "Client detector already connected" not in log
        assert f"Client {dev('01')} already connected" not in log
    finally:
        svc.stop()


def _metric(svc: object, name: str) -> float:
    from prometheus_client import generate_latest

    text = generate_latest(svc.registry).decode()  # type: ignore[attr-defined]
    return sum(
        float(ln.split()[-1])
        for ln in text.splitlines()
        if ln.startswith(name) and ln[len(name)] in " {"
    )


def test_tls_works_with_the_generated_ca_only(secure_broker: SecureBroker, clients) -> None:
    sb = secure_broker
    detector = Client(sb, "detector", tls_ca=str(sb.creds.ca_file))
    device = Client(sb, dev("02"), tls_ca=str(sb.creds.ca_file))
    clients.extend([detector, device])
    assert detector.connected() and device.connected()
    detector.subscribe(t(sb, "02", "samples"))
    payload = tag()
    assert device.publish(t(sb, "02", "samples"), payload).value == 0
    assert detector.wait_for(payload)
    # Without the CA (the system's trust store only): the certificate does not verify.
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="no-ca")
    c.username_pw_set(dev("02"), sb.creds.password(dev("02")))
    c.tls_set()
    with pytest.raises(ssl.SSLCertVerificationError):
        c.connect("localhost", sb.tls_port)
    # Another CA (a second provisioning) does not verify it either.
    other = prov.provision(prov.ProvisionConfig(out=sb.log.parent / "other-ca", beds=()))
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="other-ca")
    c.tls_set(ca_certs=str(other.ca_file))
    with pytest.raises(ssl.SSLCertVerificationError):
        c.connect("localhost", sb.tls_port)
    # Plain MQTT on the TLS port: the broker drops the connection without a CONNACK.
    plain = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="plain-on-tls")
    plain.username_pw_set(dev("02"), sb.creds.password(dev("02")))
    answered, dropped = threading.Event(), threading.Event()
    plain.on_connect = lambda *_a: answered.set()
    plain.on_disconnect = lambda *_a: dropped.set()
    plain.connect(sb.host, sb.tls_port)
    plain.loop_start()
    try:
        assert dropped.wait(WAIT_S) and not answered.is_set()
    finally:
        plain.loop_stop()


# ---------------------------------------------------------------------------------- settings


def test_services_read_their_credential_settings(tmp_path: Path, data_dir: Path) -> None:
    """Env and CLI settings reach the config, bad combinations name the field, and a missing
    bed or an empty password file is an error at start, not an anonymous connection."""
    from alerting.config import AlertingConfig
    from alerting.config import parse_args as alerting_args
    from detector.config import DetectorConfig
    from detector.config import parse_args as detector_args
    from ecgcommon.mqtt_auth import CredentialError
    from streamer.config import StreamerConfig
    from streamer.config import parse_args as streamer_args
    from streamer.service import Streamer

    creds = prov.provision(prov.ProvisionConfig(out=tmp_path / "s", beds=("01", "02")))
    pw = str(creds.password_file("detector"))
    env = {"MQTT_USERNAME": "detector", "MQTT_PASSWORD_FILE": pw, "MQTT_CA_FILE": ""}
    cfg = detector_args([], env)
    assert (cfg.mqtt.username, cfg.mqtt.password_file) == ("detector", pw)
    cfg = detector_args(["--mqtt-ca-file", str(creds.ca_file)], env)
    assert cfg.mqtt.ca_file == str(creds.ca_file)
    a = alerting_args(["--mqtt-username", "alerting", "--mqtt-password-file", pw],
                      {"ALERTING_TOKEN": "x" * 16})  # fmt: skip
    assert (a.mqtt.username, a.mqtt.password_file) == ("alerting", pw)
    s = streamer_args([], {"STREAMER_DEVICE_CREDENTIALS": str(creds.streamer_devices)})
    assert s.device_credentials == str(creds.streamer_devices)
    with pytest.raises(ValueError, match="mqtt_username and mqtt_password_file"):
        DetectorConfig(mqtt=MqttSettings(username="detector"))
    with pytest.raises(ValueError, match="mqtt_username and mqtt_password_file"):
        AlertingConfig(token="x" * 16, mqtt=MqttSettings(password_file=pw))
    with pytest.raises(ValueError, match="mqtt_ca_file"):
        StreamerConfig(mqtt=MqttSettings(ca_file=str(tmp_path / "no-such-ca.crt")))
    with pytest.raises(ValueError, match="device_credentials"):
        StreamerConfig(device_credentials=str(tmp_path / "missing.json"))
    # three beds, credentials for two: refused at start, naming the bed
    three = StreamerConfig(
        beds=3, records=("100",), data_dir=str(data_dir), device_credentials=s.device_credentials
    )
    with pytest.raises(CredentialError, match="beds 03"):
        Streamer(three)
    empty = tmp_path / "empty.password"
    empty.write_text("\n")
    with pytest.raises(CredentialError, match="empty"):
        read_password(empty)
