"""A service's MQTT credential and TLS settings, applied to a paho client in one place.

Passwords come from files (MQTT_PASSWORD_FILE, STREAMER_DEVICE_CREDENTIALS), never from the
command line or the environment, so they do not show in `ps`, `docker inspect` or logs. With no
username a client connects anonymously (the test broker allows it; the ward's does not).
"""

from __future__ import annotations

import json
import ssl
from pathlib import Path

import paho.mqtt.client as mqtt


class CredentialError(ValueError):
    """A credential file that is missing, empty or malformed (the message names the file)."""


def read_password(path: str | Path) -> str:
    """The password alone on the first line of `path` (what ecgcommon.provision writes)."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise CredentialError(
            f"cannot read the MQTT password file {path}: {exc.strerror}"
        ) from None
    password = text.strip().splitlines()[0].strip() if text.strip() else ""
    if not password:
        raise CredentialError(f"the MQTT password file {path} is empty")
    return password


def check_settings(username: str, password_file: str, ca_file: str, prefix: str = "mqtt_") -> None:
    """ValueError naming the field when the credential settings do not go together."""
    if bool(username) != bool(password_file):
        raise ValueError(
            f"{prefix}username and {prefix}password_file go together (got only one of them)"
        )
    if ca_file and not Path(ca_file).is_file():
        raise ValueError(f"{prefix}ca_file {ca_file!r} is not a file")


def apply(client: mqtt.Client, username: str = "", password: str = "", ca_file: str = "") -> None:
    """Set the client's username/password, and TLS verified against `ca_file` when given
    (TLS 1.2 or later, the broker's host name checked against its certificate)."""
    if username:
        client.username_pw_set(username, password)
    if ca_file:
        client.tls_set(
            ca_certs=ca_file, cert_reqs=ssl.CERT_REQUIRED, tls_version=ssl.PROTOCOL_TLS_CLIENT
        )


def apply_files(
    client: mqtt.Client, username: str = "", password_file: str = "", ca_file: str = ""
) -> None:
    """`apply` with the password read from `password_file` (CredentialError if unreadable)."""
    apply(client, username, read_password(password_file) if username else "", ca_file)


def load_device_credentials(path: str | Path) -> dict[tuple[str, str], tuple[str, str]]:
    """(ward, bed) -> (username, password) from a `streamer-devices.json` file."""
    try:
        data = json.loads(Path(path).read_text())
        return {
            (str(ward), str(bed)): (str(entry["username"]), str(entry["password"]))
            for ward, beds in data["devices"].items()
            for bed, entry in beds.items()
        }
    except OSError as exc:
        raise CredentialError(
            f"cannot read the device credentials {path}: {exc.strerror}"
        ) from None
    except (ValueError, KeyError, TypeError, AttributeError):
        raise CredentialError(f"{path} is not a device credentials file") from None
