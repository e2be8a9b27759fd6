"""A per-server Prometheus registry the node and the RPC layer both write to.

``prometheus_client`` (already a dependency of libp2p) renders the text format and
its metrics are plain thread-safe objects, so they fit trio without any adapter.
Each ``MetricsRegistry`` owns a private ``CollectorRegistry`` rather than the global
default one: two servers in one process (tests, an in-process testnet) must not
collide on metric names. Getters are idempotent so that components can ask for the
same metric by name without coordinating who creates it.
"""

from __future__ import annotations

from typing import Callable, Final, Sequence

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

CONTENT_TYPE: Final[str] = CONTENT_TYPE_LATEST
# Seconds; RPC calls are sub-millisecond when served from memory, proof checks take seconds.
LATENCY_BUCKETS: Final[tuple[float, ...]] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)

Metric = Counter | Gauge | Histogram


class MetricsRegistry:
    """Create-or-get counters, gauges and histograms; ``render()`` is the /metrics body."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._metrics: dict[str, tuple[type[Metric], tuple[str, ...], Metric]] = {}

    def _get(self, kind: type[Metric], name: str, documentation: str, labelnames: Sequence[str],
             **kwargs: object) -> Metric:
        labels = tuple(labelnames)
        known = self._metrics.get(name)
        if known is not None:
            if known[0] is not kind or known[1] != labels:
                raise ValueError(f"metric {name} already registered as {known[0].__name__}{list(known[1])}, "
                                 f"not {kind.__name__}{list(labels)}")
            return known[2]
        metric = kind(name, documentation or name, labels, registry=self.registry, **kwargs)  # type: ignore[arg-type]
        self._metrics[name] = (kind, labels, metric)
        return metric

    def counter(self, name: str, documentation: str = "", labelnames: Sequence[str] = ()) -> Counter:
        """A monotonically increasing count, e.g. ``counter("daimon_gossip_rejected", "...", ["topic"])``."""
        metric = self._get(Counter, name, documentation, labelnames)
        assert isinstance(metric, Counter)
        return metric

    def gauge(self, name: str, documentation: str = "", labelnames: Sequence[str] = (), *,
              function: Callable[[], float] | None = None) -> Gauge:
        """A value that goes up and down; ``function`` (unlabelled only) is read at each scrape."""
        metric = self._get(Gauge, name, documentation, labelnames)
        assert isinstance(metric, Gauge)
        if function is not None:
            metric.set_function(function)
        return metric

    def histogram(self, name: str, documentation: str = "", labelnames: Sequence[str] = (), *,
                  buckets: Sequence[float] = LATENCY_BUCKETS) -> Histogram:
        """A distribution (latencies, sizes); default buckets suit seconds from 100 µs to 10 s."""
        metric = self._get(Histogram, name, documentation, labelnames, buckets=tuple(buckets))
        assert isinstance(metric, Histogram)
        return metric

    def render(self) -> bytes:
        """Every metric in the Prometheus text exposition format 0.0.4."""
        return generate_latest(self.registry)


__all__ = ["MetricsRegistry", "CONTENT_TYPE", "LATENCY_BUCKETS"]
