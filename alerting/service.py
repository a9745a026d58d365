"""The alerting service: MQTT (or NATS) in, alarms out, HTTP API + websocket dashboard, one
asyncio loop.

The sans-I/O `AlertingCore` (alerting/core.py) does the work; this module only links it to the
bus and serves it. paho-mqtt runs its network loop in its own thread and hands every message to
the event loop with `call_soon_threadsafe`; uvicorn serves the Starlette app in the same loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import paho.mqtt.client as mqtt
import uvicorn
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client import CollectorRegistry

from alerting.config import AlertingConfig, parse_args
from alerting.core import KINDS, AlertingCore, alarms_topic, ward_hub
from alerting.metrics import AlertingMetrics
from alerting.policy import AlarmPolicy
from alerting.server import ServerMetrics, create_app
from alerting.store import AlarmStore
from alerting.writer import ThreadedWriter
from alerting.ws_protocol import ShutdownSafeWebSocketProtocol
from ecgcommon import mqtt_auth, topics
from ecgcommon.settings import load_or_exit
from ecgcommon.subjects import parse_bus

# Re-exported: callers from before the core had its own module import them from here.
__all__ = ["AlertingCore", "AlertingService", "MqttLink", "alarms_topic", "main"]

log = logging.getLogger("alerting")

# Kinds subscribed at QoS 1 in the persistent session, so the broker keeps them while the service
# is away (restart, crash) and hands them over on reconnect; samples (waveform only) are QoS 0.
DURABLE_KINDS = ("beats", "events", "status")


class BusLink(Protocol):
    """What the service needs of its bus link (`MqttLink`, or `NatsLink` for NATS)."""

    connected: threading.Event

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def publish(self, topic: str, payload: bytes) -> None: ...


class MqttLink:
    """paho-mqtt 2 client in its own thread; messages are handed to the asyncio loop.

    The session is durable (docs/faults.md): a fixed client id per alerting instance
    (`alerting-{ward}` unless configured) and a persistent session (clean_session False), so
    the beats and events published while the service was down are delivered when it is back.
    """

    def __init__(
        self,
        config: AlertingConfig,
        loop: asyncio.AbstractEventLoop,
        on_message: Callable[[str, bytes], None],
        on_resume: Callable[[], None] | None = None,
    ) -> None:
        self.config = config
        self.loop = loop
        self.connected = threading.Event()
        self._on_resume = on_resume  # called (in the loop) when the broker resumed the session
        m = config.mqtt
        self.client_id = m.client_id or f"alerting-{config.ward}"
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=self.client_id, clean_session=False
        )
        mqtt_auth.apply_files(self.client, m.username, m.password_file, m.ca_file)
        self.client.max_inflight_messages_set(1000)
        # a broker that comes back is used again within a few seconds (1..2 s by default)
        self.client.reconnect_delay_set(*m.reconnect_delays())
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_subscribe = self._on_subscribe
        self._sub_mid: int | None = None
        self.client.on_message = self._on_message
        self._deliver = on_message

    def start(self) -> None:
        m = self.config.mqtt
        self.client.connect_async(m.host, m.port, keepalive=m.keepalive_s)
        self.client.loop_start()

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.client.disconnect()
        self.client.loop_stop()

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1)

    def _on_connect(
        self, client: mqtt.Client, _u: object, _f: object, reason: Any, _p: object
    ) -> None:
        if getattr(reason, "is_failure", False):
            log.error("MQTT connect refused: %s", reason)
            return
        if getattr(_f, "session_present", False) and self._on_resume is not None:
            with contextlib.suppress(RuntimeError):  # before the backlog's first message
                self.loop.call_soon_threadsafe(self._on_resume)
        subs = [
            (topics.subscription(kind, ward=self.config.ward), 1 if kind in DURABLE_KINDS else 0)
            for kind in KINDS
        ]
        # `connected` waits for the SUBACK: until the broker has the subscriptions (a new
        # session has none), messages published to the ward are not delivered to this service
        _, self._sub_mid = client.subscribe(subs)
        log.info(
            "MQTT connected to %s:%d as %s, ward %s (session %s)",
            self.config.mqtt.host,
            self.config.mqtt.port,
            self.client_id,
            self.config.ward,
            "resumed" if getattr(_f, "session_present", False) else "new",
        )

    def _on_subscribe(
        self, _c: mqtt.Client, _u: object, mid: int, reasons: Any, _p: object
    ) -> None:
        if mid != self._sub_mid:
            return
        failed = [r for r in reasons if getattr(r, "is_failure", False)]
        if failed:
            log.error("MQTT subscription refused: %s", failed)
        if len(failed) < len(reasons):
            self.connected.set()

    def _on_disconnect(
        self, _c: mqtt.Client, _u: object, _f: object, reason: Any, _p: object
    ) -> None:
        self.connected.clear()
        log.warning("MQTT disconnected: %s", reason)

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        try:
            self.loop.call_soon_threadsafe(self._deliver, msg.topic, bytes(msg.payload))
        except RuntimeError:  # loop closed during shutdown
            pass


class AlertingService:
    """The whole service: builds the parts, runs until `stop()`; `port` is the bound HTTP port."""

    def __init__(self, config: AlertingConfig, registry: CollectorRegistry | None = None) -> None:
        self.config = config
        self.registry = registry or CollectorRegistry()
        self.hub = ward_hub(config)
        self.store = AlarmStore(config.db_path)
        self.policy = AlarmPolicy(config.policy)
        self.metrics = AlertingMetrics(self.registry)
        self.server_metrics = ServerMetrics(self.registry)
        self.core: AlertingCore | None = None
        self.mqtt: BusLink | None = None
        self.port: int | None = None
        self.ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _report(self, bed: str) -> Callable[[], bytes]:
        """Collect a bed's alarms and beats now (loop thread); render the PDF later (any)."""
        from alerting.report import bed_report, evidence_beats

        alarms = self.store.query(bed=bed, limit=200)
        beats = evidence_beats(bed, alarms, self.hub)
        return lambda: bed_report(self.config.ward, bed, alarms, beats)

    def _health(self) -> dict[str, Any]:
        """Unhealthy while the bus is down; also how many beds the detector is not analysing
        (their `signal_lost` stall alarms: all of them means the detector is down)."""
        up = self.mqtt is not None and self.mqtt.connected.is_set()
        stalled = len(self.core.stalled_beds) if self.core is not None else 0
        return {
            "status": "ok" if up else "degraded",
            "mqtt_connected": up,
            "beds_not_analysed": stalled,
        }

    async def run(self) -> None:
        """Serve until `stop()` (or a signal when installed by `main`)."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._stop = asyncio.Event()
        link: BusLink
        if parse_bus(self.config.bus).is_nats:  # the distributed bus (alerting/nats_link.py)
            from alerting.nats_link import NatsLink

            link = NatsLink(self.config, loop, self._on_message)
        else:
            link = MqttLink(self.config, loop, self._on_message, on_resume=self._on_resume)
        self.mqtt = link
        writer = ThreadedWriter(self.store, loop.call_soon_threadsafe)  # disk syncs off the loop
        self.core = AlertingCore(
            self.config,
            hub=self.hub,
            policy=self.policy,
            store=self.store,
            metrics=self.metrics,
            registry=self.registry,
            publish=link.publish if self.config.publish_alarms else None,
            writer=writer,
        )
        restored = self.core.restore()
        log.info("restored %d open alarm(s) from %s", restored, self.config.db_path)
        app = create_app(
            self.hub,
            self.core,
            self.config.token,
            self.registry,
            detector_url=self.config.detector_url,
            score_timeout_s=self.config.score_timeout_s,
            health=self._health,
            metrics=self.server_metrics,
            report=self._report,
            metrics_token=self.config.metrics_token,
            detector_token=self.config.detector_token,
        )
        ucfg = uvicorn.Config(
            app,
            host=self.config.http_host,
            port=self.config.http_port,
            ws=ShutdownSafeWebSocketProtocol,
            lifespan="off",
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=3,
        )
        ucfg.load()
        server = uvicorn.Server(ucfg)
        server.lifespan = ucfg.lifespan_class(ucfg)
        await server.startup()
        if not server.started:
            writer.close()  # nothing was written yet: just stop its thread
            raise RuntimeError(
                f"could not listen on {self.config.http_host}:{self.config.http_port}"
            )
        self.port = int(server.servers[0].sockets[0].getsockname()[1])
        link.start()
        tasks = [
            asyncio.create_task(self._every(self.config.batch_s, self._flush)),
            asyncio.create_task(self._every(self.config.tick_s, self.core.tick)),
        ]
        log.info(
            "alerting for ward %s on http://%s:%d/",
            self.config.ward,
            self.config.http_host,
            self.port,
        )
        self.ready.set()
        try:
            await self._stop.wait()
        finally:
            for t in tasks:
                t.cancel()
            link.stop()
            server.should_exit = True
            await server.shutdown()
            await asyncio.to_thread(writer.close)  # every queued change is stored
            self.store.close()
            self.ready.clear()

    def _on_message(self, topic: str, payload: bytes) -> None:
        if self.core is not None:
            self.core.on_message(topic, payload)

    def _on_resume(self) -> None:
        if self.core is not None:
            self.core.begin_replay()

    def _flush(self) -> None:
        self.hub.flush(time.time())

    async def _every(self, period_s: float, fn: Callable[[], None]) -> None:
        while True:
            await asyncio.sleep(period_s)
            try:
                fn()
            except Exception:
                log.exception("periodic %s failed", getattr(fn, "__name__", fn))

    def stop(self) -> None:
        """Ask the service to stop (thread-safe)."""
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m alerting`: run until SIGINT/SIGTERM; 2 on a configuration error."""
    config = load_or_exit(parse_args, argv, log)
    if config is None:
        return 2
    service = AlertingService(config)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, service.stop)
        await service.run()

    try:
        asyncio.run(run())
    except mqtt_auth.CredentialError as exc:
        log.error("%s", exc)
        return 2
    return 0
