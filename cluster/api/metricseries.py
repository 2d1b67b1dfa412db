"""Prometheus series kept as plain Python values; the library is loaded only to expose them.

Server and agent count requests, datastore calls and runtime operations all the time, but are
scraped rarely, and on a board often never. prometheus_client costs about 1.5 MB when imported
next to aiohttp (its exposition module pulls in ``http.server``, ``wsgiref``…), and its
labelled histograms about 4 KB per series (one locked value per bucket). So the series here are
dicts of floats (a histogram series is a list of bucket counts and a sum, about 300 bytes),
touched only from the event loop and so needing no locks, and :meth:`Registry.exposition`
imports prometheus_client on the first scrape, builds the component's own
``CollectorRegistry`` (never the library's global one) and lets the library write the text
format. Names and labels are the Kubernetes components' own.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence
from typing import Any

Labels = tuple[str, ...]
CollectFunction = Callable[[], Iterable[Any]]  # yields prometheus_client metric families


class Counter:
    def __init__(self, name: str, documentation: str, labels: Sequence[str] = ()) -> None:
        self.name, self.documentation, self.labels = name, documentation, tuple(labels)
        self.values: dict[Labels, float] = {}

    def inc(self, labels: Labels = (), amount: float = 1.0) -> None:
        self.values[labels] = self.values.get(labels, 0.0) + amount

    def collect(self) -> Iterable[Any]:
        from prometheus_client.core import CounterMetricFamily

        family = CounterMetricFamily(self.name, self.documentation, labels=self.labels)
        _add(family, family.name + "_total", self.labels, self.values)
        yield family


class Gauge:
    def __init__(self, name: str, documentation: str, labels: Sequence[str] = ()) -> None:
        self.name, self.documentation, self.labels = name, documentation, tuple(labels)
        self.values: dict[Labels, float] = {}

    def set(self, labels: Labels, value: float) -> None:
        self.values[labels] = value

    def inc(self, labels: Labels = (), amount: float = 1.0) -> None:
        self.values[labels] = self.values.get(labels, 0.0) + amount

    def collect(self) -> Iterable[Any]:
        from prometheus_client.core import GaugeMetricFamily

        family = GaugeMetricFamily(self.name, self.documentation, labels=self.labels)
        _add(family, family.name, self.labels, self.values)
        yield family


class Histogram:
    def __init__(
        self,
        name: str,
        documentation: str,
        labels: Sequence[str],
        buckets: Sequence[float],
    ) -> None:
        self.name, self.documentation, self.labels = name, documentation, tuple(labels)
        self.bounds = tuple(buckets)
        # labels → [count in each bucket (not cumulative)…, count above the last, sum]
        self.series: dict[Labels, list[float]] = {}

    def observe(self, labels: Labels, value: float) -> None:
        series = self.series.get(labels)
        if series is None:
            series = self.series[labels] = [0.0] * (len(self.bounds) + 2)
        series[bisect_left(self.bounds, value)] += 1  # le: a value on a bound counts there
        series[-1] += value

    def count(self, labels: Labels) -> float:
        series = self.series.get(labels)
        return sum(series[:-1]) if series else 0.0

    def collect(self) -> Iterable[Any]:
        from prometheus_client.core import HistogramMetricFamily
        from prometheus_client.samples import Sample

        bounds = [str(float(b)) for b in self.bounds] + ["+Inf"]
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labels)
        bucket, count, total = (f"{self.name}_{s}" for s in ("bucket", "count", "sum"))
        append = family.samples.append
        for values, series in self.series.items():
            labels = _present(self.labels, values)
            cumulative = 0.0
            for bound, number in zip(bounds, series[:-1], strict=True):
                cumulative += number
                append(Sample(bucket, {**labels, "le": bound}, cumulative))
            append(Sample(count, labels, cumulative))
            append(Sample(total, labels, series[-1]))
        yield family


def _present(names: Labels, values: Labels) -> dict[str, str]:
    """The labels that have a value: Prometheus reads an empty label as an absent one, and
    leaving them out saves the scrape part of its escaping work (an idle server's ~700 lines:
    2.3 ms of CPU instead of 3.0 on the build machine)."""
    return {name: value for name, value in zip(names, values, strict=True) if value}


def _add(family: Any, name: str, names: Labels, values: dict[Labels, float]) -> None:
    from prometheus_client.samples import Sample

    for labels, value in values.items():
        family.samples.append(Sample(name, _present(names, labels), value))


class MetricsUnavailable(Exception):
    """The metrics cannot be written: the message says what to install."""


class _Adapter:
    """Gives a collect function the shape prometheus_client's registry asks for."""

    def __init__(self, collect: CollectFunction) -> None:
        self.collect = collect

    def describe(self) -> list[Any]:
        return []  # names are not checked for clashes: each is registered once, here


class Registry:
    """A component's series and scrape-time collectors; one per application."""

    def __init__(self) -> None:
        self._collectors: list[CollectFunction] = []
        self._registry: Any = None

    def register(self, collect: CollectFunction) -> None:
        self._collectors.append(collect)
        if self._registry is not None:
            self._registry.register(_Adapter(collect))

    def counter(self, name: str, documentation: str, labels: Sequence[str] = ()) -> Counter:
        series = Counter(name, documentation, labels)
        self.register(series.collect)
        return series

    def gauge(self, name: str, documentation: str, labels: Sequence[str] = ()) -> Gauge:
        series = Gauge(name, documentation, labels)
        self.register(series.collect)
        return series

    def histogram(
        self, name: str, documentation: str, labels: Sequence[str], buckets: Sequence[float]
    ) -> Histogram:
        series = Histogram(name, documentation, labels, buckets)
        self.register(series.collect)
        return series

    def exposition(self) -> bytes:
        """Everything in Prometheus' text format (imports prometheus_client the first time)."""
        try:
            from prometheus_client import CollectorRegistry
            from prometheus_client.exposition import generate_latest
        except ImportError:
            raise MetricsUnavailable(
                "prometheus_client is not installed: install python3-prometheus-client"
                " (Debian) or the prometheus-client package to serve metrics"
            ) from None

        if self._registry is None:
            registry: Any = CollectorRegistry(auto_describe=False)
            for collect in self._collectors:
                registry.register(_Adapter(collect))
            self._registry = registry
        return bytes(generate_latest(self._registry))


def gauge_family(name: str, documentation: str, value: float) -> Any:
    from prometheus_client.core import GaugeMetricFamily

    return GaugeMetricFamily(name, documentation, value)


def counter_family(name: str, documentation: str, value: float) -> Any:
    from prometheus_client.core import CounterMetricFamily

    return CounterMetricFamily(name, documentation, value)


def labelled_gauge(name: str, documentation: str, labels: Sequence[str]) -> Any:
    from prometheus_client.core import GaugeMetricFamily

    return GaugeMetricFamily(name, documentation, labels=labels)


def labelled_counter(name: str, documentation: str, labels: Sequence[str]) -> Any:
    from prometheus_client.core import CounterMetricFamily

    return CounterMetricFamily(name, documentation, labels=labels)


CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
