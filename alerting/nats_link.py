"""The alerting service's link to the NATS bus (`ECG_BUS=nats://…`), on the service's own loop.

Results (beats, events) come from a durable JetStream consumer of `ECG_OUT` per ward,
acknowledged (ack-all) only after the core has handled them, so a restarted service replays
what it missed and no alarm whose cause fell in an outage is lost. A repeat after a crash
between handling and acknowledging is dropped by the core (a beat not newer than the bed's
newest is stale). Samples and status, for the waveform and the stall check, are live only.
Same interface as `MqttLink`: `start()`, `stop()`, `publish()`, `connected`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any

from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from alerting.config import AlertingConfig
from ecgcommon import nats_conn, subjects
from ecgcommon.topics import TopicError

log = logging.getLogger("alerting.nats")
FETCH_BATCH = 512
FETCH_WAIT_S = 0.25
ACK_WAIT_S = 30.0


def durable_name(ward: str) -> str:
    """The ward's durable consumer (NATS names carry no `.`, `*`, `>`)."""
    return "alerting_" + "".join(c if c.isalnum() or c in "-_" else "_" for c in ward)


class NatsLink:
    """NATS client tasks on the asyncio loop of the service."""

    def __init__(
        self,
        config: AlertingConfig,
        loop: asyncio.AbstractEventLoop,
        on_message: Callable[[str, bytes], None],
    ) -> None:
        self.config = config
        self.loop = loop
        self.connected = threading.Event()
        self.servers = list(subjects.parse_bus(config.bus).servers)
        self._deliver = on_message
        self._task: asyncio.Task | None = None
        self.nc: Any = None

    def start(self) -> None:
        self._task = self.loop.create_task(self._run())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    def publish(self, topic: str, payload: bytes) -> None:
        """Alarm changes, core NATS (the MQTT view sees them as `ecg/v1/…/alarms`)."""
        if self.nc is None or not self.nc.is_connected:
            return
        self.loop.create_task(self.nc.publish(topic.replace("/", "."), payload))

    def _handle(self, subj: str, data: bytes) -> None:
        try:
            topic = subjects.topic_of(subj)
        except TopicError as exc:
            log.debug("dropped %s: %s", subj, exc)
            return
        self._deliver(topic, data)

    async def _connect(self) -> None:
        self.nc = await nats_conn.connect(
            self.servers,
            f"alerting-{self.config.ward}",
            log,
            on_up=self.connected.set,
            on_down=self.connected.clear,
        )

    async def _run(self) -> None:
        while True:  # a refused setup (no stream leader yet, say) is tried again, not fatal
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("NATS session failed (%s); starting again", exc)
                await asyncio.sleep(1.0)

    async def _session(self) -> None:
        await self._connect()
        try:
            js = self.nc.jetstream()
            await subjects.ensure_stream(js, subjects.OUT_STREAM, subjects.output_subjects(), 600.0)

            async def on_live(msg: Any) -> None:
                self._handle(msg.subject, msg.data)

            await self.nc.subscribe(subjects.live_filter(self.config.ward), cb=on_live)
            cfg = ConsumerConfig(
                ack_policy=AckPolicy.ALL,
                deliver_policy=DeliverPolicy.NEW,
                ack_wait=ACK_WAIT_S,
                max_ack_pending=20_000,
            )
            psub = await js.pull_subscribe(
                subjects.output_filter(self.config.ward),
                durable=durable_name(self.config.ward),
                stream=subjects.OUT_STREAM,
                config=cfg,
            )
            self.connected.set()
            log.info(
                "NATS connected to %s, durable consumer %s",
                self.servers,
                durable_name(self.config.ward),
            )
            while True:
                try:
                    msgs = await psub.fetch(FETCH_BATCH, timeout=FETCH_WAIT_S)
                except TimeoutError:
                    continue
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # a server away: the client reconnects
                    log.debug("fetch: %s", exc)
                    await asyncio.sleep(0.2)
                    continue
                for m in msgs:
                    self._handle(m.subject, m.data)
                if msgs:
                    with contextlib.suppress(Exception):
                        await msgs[-1].ack()  # ack-all: everything up to here is handled
        finally:
            self.connected.clear()
            with contextlib.suppress(Exception):
                await self.nc.close()
