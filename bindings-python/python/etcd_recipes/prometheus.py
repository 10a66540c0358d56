"""Export this process's etcd-recipes metrics through ``prometheus_client``.

``prometheus_client`` is optional: this module imports it, the rest of the package does
not. Register the collector once; every scrape reads the core's metrics at that moment::

    from prometheus_client import start_http_server
    import etcd_recipes.prometheus

    etcd_recipes.prometheus.register()      # into prometheus_client.REGISTRY
    start_http_server(9100)

Families (see the README's "Metrics" section): lock wait and hold time histograms and a
waiters gauge by lock name, session renew latency and losses, leader changes per
election, registrations healed, view lag and compaction re-reads, work-queue depth,
redeliveries and dead letters. Lock, election, service and queue names are label values:
keep their number bounded.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import REGISTRY, Collector, CollectorRegistry

from etcd_recipes._native import MetricFamily, metrics_snapshot

__all__ = ["EtcdRecipesCollector", "register"]


def _family(f: MetricFamily) -> Metric:
    labels = [f.label] if f.label else []
    if f.kind == "histogram":
        h = HistogramMetricFamily(f.name, f.help, labels=labels, unit="")
        for s in f.samples:
            buckets = [(_le(le), float(c)) for le, c in s.buckets] + [("+Inf", float(s.count))]
            h.add_metric([s.label_value or ""] if labels else [], buckets, s.sum)
        return h
    if f.kind == "counter":
        c = CounterMetricFamily(f.name, f.help, labels=labels)
        for s in f.samples:
            c.add_metric([s.label_value or ""] if labels else [], s.value)
        return c
    g = GaugeMetricFamily(f.name, f.help, labels=labels)
    for s in f.samples:
        g.add_metric([s.label_value or ""] if labels else [], s.value)
    return g


def _le(bound: float) -> str:
    # prometheus_client writes bucket bounds as given; use its float spelling ("0.005", "1.0").
    return repr(float(bound))


class EtcdRecipesCollector(Collector):
    """A ``prometheus_client`` collector of this process's etcd-recipes metrics."""

    def collect(self) -> Iterator[Metric]:
        """One metric family per etcd-recipes metric, read now."""
        for f in metrics_snapshot():
            yield _family(f)

    def describe(self) -> list[Metric]:
        """Nothing up front: the families are read at each collection."""
        return []


def register(registry: CollectorRegistry = REGISTRY) -> EtcdRecipesCollector:
    """Register a collector into ``registry`` (the default registry unless given); returns it."""
    collector = EtcdRecipesCollector()
    registry.register(collector)
    return collector
