"""Declaring a service's Prometheus metrics: every name under its namespace, one registry.

The services pass their registry in (tests use a private one); `MetricFactory` binds the two so
a metric is declared by what differs (name, help, labels, buckets) and not by the boilerplate.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class MetricFactory:
    """Makes the metrics of one service: `<namespace>_<name>`, registered on `registry`."""

    def __init__(self, registry: CollectorRegistry, namespace: str) -> None:
        self.registry = registry
        self.namespace = namespace

    def _name(self, name: str) -> str:
        return f"{self.namespace}_{name}"

    def counter(
        self, name: str, doc: str, labels: Sequence[str] = (), *, preset: Iterable[str] = ()
    ) -> Counter:
        """A counter (exposed as `..._total`); `preset`: values of its one label made at 0,
        so their series exist before the first count."""
        c = Counter(self._name(name), doc, list(labels), registry=self.registry)
        for value in preset:
            c.labels(value)
        return c

    def gauge(self, name: str, doc: str, labels: Sequence[str] = ()) -> Gauge:
        """A gauge."""
        return Gauge(self._name(name), doc, list(labels), registry=self.registry)

    def histogram(
        self, name: str, doc: str, buckets: Sequence[float], labels: Sequence[str] = ()
    ) -> Histogram:
        """A histogram with the given bucket bounds (name it with its unit)."""
        return Histogram(
            self._name(name), doc, list(labels), buckets=buckets, registry=self.registry
        )
