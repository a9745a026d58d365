"""A NATS cluster on loopback (JetStream, MQTT listener, the bed-partition mapping), for the
cluster tests and `make bench-cluster`; deploy/nats/nats.conf is the same for docker compose."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ecgcommon.subjects import PARTITIONS, mappings
from tests.helpers.ports import free_port


def nats_binary() -> str:
    found = shutil.which("nats-server") or (
        "/usr/sbin/nats-server" if Path("/usr/sbin/nats-server").exists() else None
    )
    if not found:
        raise RuntimeError("nats-server is not installed; run scripts/install-system-deps.sh")
    return found


def mapping_block(partitions: int = PARTITIONS) -> str:
    """The `mappings` block of a server config."""
    lines = [f'  "{src}": "{dst}"' for src, dst in mappings(partitions).items()]
    return "mappings = {\n" + "\n".join(lines) + "\n}\n"


def node_config(
    name: str,
    port: int,
    mqtt_port: int,
    cluster_port: int,
    routes: list[int],
    store_dir: Path,
    partitions: int = PARTITIONS,
) -> str:
    """One node's config: JetStream on, MQTT (needs JetStream and a server_name), routes."""
    text = (
        f"server_name: {name}\nlisten: 127.0.0.1:{port}\n"
        f'jetstream {{ store_dir: "{store_dir}", max_memory_store: 268435456 }}\n'
        f"mqtt {{ listen: 127.0.0.1:{mqtt_port}"
        + (", stream_replicas: 3" if routes else "")
        + " }\n"
        "max_payload: 4194304\n"
    )
    if routes:
        route_list = ", ".join(f"nats-route://127.0.0.1:{p}" for p in routes)
        text += (
            f"cluster {{ name: ecg, listen: 127.0.0.1:{cluster_port}, routes: [{route_list}] }}\n"
        )
    return text + mapping_block(partitions)


@dataclass
class Node:
    name: str
    port: int
    mqtt_port: int
    cluster_port: int
    conf: Path
    log: Path
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"


@dataclass
class NatsCluster:
    """`n` nats-server processes in `folder` (1: single server, no routes)."""

    folder: Path
    n: int = 3
    partitions: int = PARTITIONS
    nodes: list[Node] = field(default_factory=list)

    def __post_init__(self) -> None:
        ports = [(free_port(), free_port(), free_port()) for _ in range(self.n)]
        for i, (port, mqtt_port, cport) in enumerate(ports):
            name = f"n{i + 1}"
            routes = [c for j, (_, _, c) in enumerate(ports) if j != i] if self.n > 1 else []
            conf = self.folder / f"{name}.conf"
            store = self.folder / f"{name}-store"
            conf.write_text(
                node_config(name, port, mqtt_port, cport, routes, store, self.partitions)
            )
            self.nodes.append(Node(name, port, mqtt_port, cport, conf, self.folder / f"{name}.log"))

    @property
    def bus(self) -> str:
        """The `ECG_BUS` value naming every node."""
        return ",".join(n.url for n in self.nodes)

    def start_node(self, node: Node) -> None:
        with open(node.log, "ab") as log:
            node.proc = subprocess.Popen(
                [nats_binary(), "-c", str(node.conf)], stdout=subprocess.DEVNULL, stderr=log
            )

    def start(self, timeout: float = 30.0) -> None:
        for node in self.nodes:
            self.start_node(node)
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Every running node listens and JetStream answers (a meta leader is elected)."""
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            if node.proc is None or node.proc.poll() is not None:
                continue
            while True:
                if asyncio.run(_js_ready(node.url)):
                    break
                if node.proc.poll() is not None:
                    raise RuntimeError(f"{node.name} exited: {node.log.read_text()[-2000:]}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{node.name}: JetStream not ready in {timeout} s")
                time.sleep(0.2)

    def kill(self, node: Node) -> None:
        """`kill -9` one node."""
        if node.proc is not None and node.proc.poll() is None:
            os.kill(node.proc.pid, signal.SIGKILL)
            node.proc.wait(timeout=10)

    def stop(self) -> None:
        for node in self.nodes:
            if node.proc is not None and node.proc.poll() is None:
                node.proc.terminate()
        for node in self.nodes:
            if node.proc is not None:
                try:
                    node.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    node.proc.kill()


async def _js_ready(url: str) -> bool:
    import nats

    try:
        nc = await nats.connect(
            url, connect_timeout=1, max_reconnect_attempts=0, allow_reconnect=False
        )
    except Exception:
        return False
    try:
        await nc.jetstream().account_info()
        return True
    except Exception:
        return False
    finally:
        await nc.close()


@contextmanager
def running_cluster(folder: Path, n: int = 3) -> Iterator[NatsCluster]:
    """`n` nodes (1: a single server) started in `folder`, stopped on the way out."""
    folder.mkdir(parents=True, exist_ok=True)
    cluster = NatsCluster(folder, n=n)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


async def stream_leader(url: str, stream: str) -> str | None:
    """The server name leading a stream (the cluster tests spare it or kill it on purpose)."""
    import nats

    nc = await nats.connect(url, connect_timeout=2)
    try:
        info = await nc.jetstream().stream_info(stream)
        return info.cluster.leader if info.cluster else None
    finally:
        await nc.close()
