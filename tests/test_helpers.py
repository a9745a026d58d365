"""tests/helpers on its own: waits end as soon as the state is there and fail naming what they
waited for; a stopped Mosquitto comes back on its port; subscribers and output readers wake
their waiters."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from tests.helpers.broker import Broker, Mosquitto
from tests.helpers.mqtt import Subscriber
from tests.helpers.ports import accepts, free_port
from tests.helpers.procs import OutputLines
from tests.helpers.waits import Inbox, WaitTimeout, wait_event, wait_until, wait_until_async


def test_wait_until_returns_the_value_once_true() -> None:
    calls = iter([0, None, "", [3]])
    assert wait_until(lambda: next(calls), 5, "the list") == [3]


def test_wait_until_names_what_and_the_last_value_on_timeout() -> None:
    start = time.monotonic()
    with pytest.raises(WaitTimeout, match=r"waiting for the beds .*last value: 0") as err:
        wait_until(lambda: 0, 0.1, "the beds", detail=lambda: "log tail")
    assert "log tail" in str(err.value)
    assert time.monotonic() - start < 2


def test_wait_until_stops_at_once_when_check_raises() -> None:
    def dead() -> None:
        raise AssertionError("child exited")

    start = time.monotonic()
    with pytest.raises(AssertionError, match="child exited"):
        wait_until(lambda: False, 30, "never", check=dead)
    assert time.monotonic() - start < 1


def test_wait_until_ignores_the_listed_errors_until_it_works() -> None:
    tries = iter([OSError("refused"), OSError("refused"), 200])

    def probe() -> int:
        item = next(tries)
        if isinstance(item, Exception):
            raise item
        return item

    assert wait_until(probe, 5, "a 200", ignore=(OSError,)) == 200


def test_wait_event_and_inbox_wake_waiters_without_polling() -> None:
    ev = threading.Event()
    with pytest.raises(WaitTimeout, match="the SUBACK"):
        wait_event(ev, 0.05, "the SUBACK")
    box: Inbox[int] = Inbox()
    threading.Timer(0.05, box.put, args=(1, 2, 3)).start()
    assert box.wait_count(3, 5, "three items") == [1, 2, 3]
    assert box.wait_count(1, 0.01, "odd", where=lambda i: i % 2 == 0) == [2]
    with pytest.raises(WaitTimeout, match="five items"):
        box.wait_count(5, 0.05, "five items")


def test_wait_until_async_runs_the_loop_between_looks() -> None:
    import asyncio

    async def main() -> int:
        box: list[int] = []
        asyncio.get_running_loop().call_later(0.05, box.append, 5)
        return (await wait_until_async(lambda: box, 5, "the item"))[0]

    assert asyncio.run(main()) == 5


def test_mosquitto_stops_and_comes_back_on_its_port(tmp_path: Path) -> None:
    mq = Mosquitto(tmp_path)
    with mq as broker:
        assert isinstance(broker, Broker) and accepts(broker.host, broker.port)
        sub = Subscriber(broker, "t/#")
        try:
            pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
            pub.connect(broker.host, broker.port)
            pub.loop_start()
            pub.publish("t/x", b"one", qos=1).wait_for_publish(5)
            assert sub.wait_for(lambda: [m.payload for m in sub.messages] == [b"one"], 5)
            pub.loop_stop()
            pub.disconnect()
        finally:
            sub.close()
        mq.stop()
        assert not accepts(broker.host, broker.port)
        mq.start()
        assert accepts(broker.host, broker.port)
    assert not accepts("127.0.0.1", mq.port)
    assert not accepts("127.0.0.1", free_port())


def test_output_lines_waits_for_a_line_and_the_end() -> None:
    code = "import sys; print('starting', flush=True); print('port 4242', flush=True)"
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert proc.stdout is not None
    out = OutputLines(proc.stdout)
    assert out.wait_line(r"port (\d+)", 10).group(1) == "4242"
    assert proc.wait(10) == 0
    assert out.join().splitlines() == ["starting", "port 4242"]
    with pytest.raises(WaitTimeout, match="output ended"):
        out.wait_line("never", 5)
