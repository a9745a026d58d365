"""Shared fixtures: the local MIT-BIH copy and real Mosquitto brokers on free loopback ports
(anonymous `broker`; `secure_broker` with the provisioned password, ACL and TLS files) and a
headless Chromium (`browser`, per module).
The launchers live in tests/helpers/broker.py, which the benches use too."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import pytest

from ecgcommon.records import resolve_data_dir
from tests.helpers.broker import Broker, BrokerError, Mosquitto, SecureBroker, secure_mosquitto

if TYPE_CHECKING:
    from playwright.sync_api import Browser

T = TypeVar("T")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    folder = resolve_data_dir()
    if not (folder / "100.hea").is_file():
        pytest.fail(f"MIT-BIH not found at {folder}; set ECG_DATA_DIR")
    return folder


def _provided(cm: AbstractContextManager[T], missing: type[Exception]) -> Iterator[T]:
    """What `cm` gives, for a fixture to yield; a `missing` error (a broker or browser that
    is not installed or does not start) fails the tests that need it."""
    try:
        with cm as running:
            yield running
    except missing as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """A real Mosquitto on 127.0.0.1:<free port> for the whole session."""
    yield from _provided(Mosquitto(tmp_path_factory.mktemp("mosquitto")), BrokerError)


@pytest.fixture(scope="session")
def secure_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    """`python -m ecgcommon.provision`'s files for SECURE_WARD (beds 01-03 and the service
    accounts) served by a real Mosquitto, as `make ward` runs it."""
    yield from _provided(secure_mosquitto(tmp_path_factory.mktemp("secure-broker")), BrokerError)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """A headless Chromium (Debian's, through Playwright) for the module's dashboard tests."""
    from tests.helpers.browser import ChromiumMissing, chromium  # Playwright only where used

    yield from _provided(chromium(), ChromiumMissing)


@pytest.fixture
def unique_ward() -> str:
    """A ward name unique to the test, so topics never collide (as aiomqtt's tests do)."""
    return f"test-{uuid.uuid4().hex[:10]}"
