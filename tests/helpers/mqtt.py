"""Real MQTT clients for tests: subscribers that tests wait on without polling, and a hook that
tells when a service's own client has had its subscriptions acknowledged."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import paho.mqtt.client as mqtt

from ecgcommon.protocol import BeatResult, Event, decode_beats, decode_event
from ecgcommon.topics import parse_topic, subscription

from .waits import Inbox, wait_event

SUBACK_S = 5.0  # a loopback broker that has not acknowledged a subscription by then is broken


class Address(Protocol):
    """Where a broker listens (`Broker`, `SecureBroker` and the like)."""

    @property
    def host(self) -> str: ...

    @property
    def port(self) -> int: ...


class Message(NamedTuple):
    topic: str
    payload: bytes
    retain: bool


def suback_event(client: mqtt.Client) -> threading.Event:
    """An event set each time the broker acknowledges a subscription of `client` (a service's
    own client, hooked before it starts): tests publish only once the service listens.
    Clear it before a broker restart to wait for the re-subscription."""
    acked = threading.Event()
    before = client.on_subscribe

    def on_subscribe(*args: Any) -> None:
        if before is not None:
            before(*args)
        acked.set()

    client.on_subscribe = on_subscribe
    return acked


class Subscriber:
    """A real client subscribed (QoS 1, again after a reconnect) to `filters`; returned once the
    broker acknowledged them. What arrives is kept in `inbox`, which waiters block on."""

    def __init__(self, broker: Address, *filters: str, client_id: str = "") -> None:
        self.inbox: Inbox[Message] = Inbox()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
        self.client.on_connect = lambda c, *_: c.subscribe([(f, 1) for f in filters])
        self.subscribed = suback_event(self.client)
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        wait_event(self.subscribed, SUBACK_S, f"SUBACK for {filters}")

    def _on_message(self, _c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        self.on_message(Message(msg.topic, bytes(msg.payload), bool(msg.retain)))

    def on_message(self, message: Message) -> None:
        """Keep the message (subclasses decode it first)."""
        self.inbox.put(message)

    @property
    def messages(self) -> list[Message]:
        return self.inbox.items()

    def of_kind(self, kind: str) -> list[Message]:
        """The messages on topics of that kind (`samples`, `status`, ...)."""
        return [m for m in self.inbox.items() if m.topic.endswith("/" + kind)]

    def wait_for(
        self, cond: Callable[[], object], timeout: float = 20.0, what: str = "messages"
    ) -> object:
        """Block until `cond()` holds, re-checked on each message; raise `WaitTimeout` else."""
        return self.inbox.wait_for(lambda _: cond(), timeout, what)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class WardListener(Subscriber):
    """A subscriber to one ward's beats and events, decoded as they arrive."""

    def __init__(self, broker: Address, ward: str) -> None:
        self.beats: list[BeatResult] = []
        self.events: list[Event] = []
        super().__init__(
            broker, subscription("beats", ward=ward), subscription("events", ward=ward)
        )

    def on_message(self, message: Message) -> None:
        if parse_topic(message.topic).kind == "beats":
            beats, events = decode_beats(message.payload), []
        else:
            beats, events = [], [decode_event(message.payload)]
        with self.inbox.lock:
            self.beats += beats
            self.events += events
            super().on_message(message)

    def events_of(self, bed: str, etype: str) -> list[Event]:
        with self.inbox.lock:
            return [e for e in self.events if e.bed == bed and e.type == etype]

    def beats_of(self, bed: str) -> list[BeatResult]:
        with self.inbox.lock:
            return [b for b in self.beats if b.bed == bed]
