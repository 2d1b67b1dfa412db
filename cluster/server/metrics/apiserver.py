"""The API server's Prometheus metrics: one registry per application, served at ``/metrics``.

:class:`ServerMetrics` owns a :class:`prometheus_client.CollectorRegistry` (never the library's
global one, so two servers in one process, as in tests, keep apart) and the request middleware
that counts every request under kube-apiserver's names and labels
(``apiserver_request_total{verb,group,version,resource,subresource,scope,component,code}``,
``apiserver_request_duration_seconds``, ``apiserver_longrunning_requests``,
``apiserver_current_inflight_requests``), so that existing Grafana dashboards for Kubernetes
work. Values that already live elsewhere (in-flight counts, the datastore's revisions and size,
tunnel connections) are read at scrape time by a collector instead of being copied on every
change. The datastore's timings come from :mod:`.datastore`, the control plane's from
:mod:`.controlplane`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from k3py.cluster.server.rest.http import TARGET_KEY, RequestTarget
from k3py.cluster.server.store import StoreStats

# Fewer buckets than kube-apiserver's 23: each labelled series keeps one value per bucket, and
# histogram_quantile() works on any bucket layout.
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
STORAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)
_REQUEST_LABELS = ("verb", "dry_run", "group", "version", "resource", "subresource", "scope")
_HTTP_VERBS = {
    "get": "GET",
    "list": "LIST",
    "watch": "WATCH",
    "create": "POST",
    "update": "PUT",
    "patch": "PATCH",
    "delete": "DELETE",
    "deletecollection": "DELETE",
}
_CONNECT_SUBRESOURCES = frozenset({"exec", "attach", "portforward", "proxy"})
COMPONENT = "apiserver"
METRICS_PATH = "/metrics"


def _verb(request: web.Request, target: RequestTarget | None) -> str:
    if target is None:
        return request.method
    if target.subresource in _CONNECT_SUBRESOURCES:
        return "CONNECT"
    if target.verb == "patch" and request.content_type == "application/apply-patch+yaml":
        return "APPLY"
    return _HTTP_VERBS.get(target.verb, request.method)


def _scope(target: RequestTarget) -> str:
    if target.name:
        return "resource"
    return "namespace" if target.namespace else "cluster"


def request_labels(request: web.Request) -> tuple[str, ...]:
    """kube-apiserver's request labels, from the target the auth middleware parsed."""
    target = request.get(TARGET_KEY)
    if not isinstance(target, RequestTarget):
        return (_verb(request, None), "", "", "", "", "", "")
    dry_run = "All" if request.query.get("dryRun") else ""
    info = target.info
    return (
        _verb(request, target),
        dry_run,
        info.group,
        info.version,
        info.plural,
        target.subresource,
        _scope(target),
    )


class ServerMetrics:
    """The server's registry and request instrumentation (stored on the app under METRICS)."""

    def __init__(self) -> None:
        # The library adds a ``_created`` series next to every counter and histogram unless told
        # not to; they double the series a board keeps and that Kubernetes' metrics lack.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry(auto_describe=False)
        labels = (*_REQUEST_LABELS, "component")
        self.requests = Counter(
            "apiserver_request_total",
            "Counter of apiserver requests broken out for each verb, dry run value, group,"
            " version, resource, scope, component, and HTTP response code.",
            (*labels, "code"),
            registry=self.registry,
        )
        self.durations = Histogram(
            "apiserver_request_duration_seconds",
            "Response latency distribution in seconds for each verb, dry run value, group,"
            " version, resource, subresource, scope and component.",
            labels,
            buckets=REQUEST_BUCKETS,
            registry=self.registry,
        )
        self.longrunning = Gauge(
            "apiserver_longrunning_requests",
            "Gauge of all active long-running apiserver requests (watches, exec, logs).",
            labels,
            registry=self.registry,
        )
        self.storage = Histogram(
            "etcd_request_duration_seconds",
            "Datastore request latency in seconds for each operation and object type.",
            ("operation", "type"),
            buckets=STORAGE_BUCKETS,
            registry=self.registry,
        )
        self.storage_errors = Counter(
            "k3py_datastore_request_errors_total",
            "Datastore requests that failed (conflicts and missing keys included).",
            ("operation", "type"),
            registry=self.registry,
        )
        self.scrape_state = ScrapeState()
        self.registry.register(_StateCollector(self.scrape_state))
        # (labels, code) -> (counter child, histogram child): label lookups cost more than the
        # increments, and the set is bounded by resources x verbs x codes.
        self._children: dict[tuple[tuple[str, ...], str], tuple[Any, Any]] = {}

    def _record(self, labels: tuple[str, ...], code: int, seconds: float | None) -> None:
        key = (labels, str(code))
        pair = self._children.get(key)
        if pair is None:
            pair = (
                self.requests.labels(*labels, COMPONENT, str(code)),
                self.durations.labels(*labels, COMPONENT),
            )
            self._children[key] = pair
        pair[0].inc()
        if seconds is not None:
            pair[1].observe(seconds)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Count and time every request; long-running ones are counted, not timed."""
        started = time.perf_counter()
        long_running = self.scrape_state.is_long_running(request)
        gauge = None
        if long_running:
            gauge = self.longrunning.labels(*request_labels(request), COMPONENT)
            gauge.inc()
        code = 500
        try:
            response = await handler(request)
            code = response.status
            return response
        except web.HTTPException as exc:
            code = exc.status
            raise
        finally:
            labels = request_labels(request)
            if gauge is not None:
                gauge.dec()
            self._record(labels, code, None if long_running else time.perf_counter() - started)

    async def handle(self, request: web.Request) -> web.Response:
        """``GET /metrics``: the registry in Prometheus' text format."""
        return web.Response(
            body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )


class ScrapeState:
    """What the collector reads at scrape time; the server fills in the sources it has."""

    def __init__(self) -> None:
        self.inflight: Callable[[], tuple[int, int]] | None = None
        self.is_long_running: Callable[[web.Request], bool] = lambda _: False
        self.datastore: Any = None
        self.tunnels: Callable[[], int] | None = None
        self.ready: Callable[[], bool] | None = None


def _file_size(path: Path) -> int:
    total = 0
    for suffix in ("", "-wal"):
        with contextlib.suppress(OSError):
            total += (path.parent / (path.name + suffix)).stat().st_size
    return total


class _StateCollector(Collector):
    def __init__(self, state: ScrapeState) -> None:
        self._state = state

    def collect(self) -> Iterator[Metric]:
        state = self._state
        if state.inflight is not None:
            reading, mutating = state.inflight()
            family = GaugeMetricFamily(
                "apiserver_current_inflight_requests",
                "Maximal number of currently used inflight request limit of this apiserver per"
                " request kind in last second.",
                labels=("request_kind",),
            )
            family.add_metric(("readOnly",), reading)
            family.add_metric(("mutating",), mutating)
            yield family
        yield from _datastore_families(state.datastore)
        if state.tunnels is not None:
            yield GaugeMetricFamily(
                "k3py_agent_tunnels", "Agents connected through their tunnel.", state.tunnels()
            )


def _datastore_families(store: Any) -> Iterator[Metric]:
    if store is None:
        return
    yield GaugeMetricFamily(
        "k3py_datastore_current_revision",
        "The datastore's latest revision (resourceVersion).",
        store.current_revision,
    )
    yield GaugeMetricFamily(
        "k3py_datastore_compact_revision",
        "The revision up to which the datastore's history has been compacted.",
        store.compact_revision,
    )
    path = getattr(store, "path", None)
    if isinstance(path, Path):
        yield _labelled_gauge(
            "apiserver_storage_size_bytes",
            "Size of the storage database file physically allocated in bytes.",
            "storage_cluster_id",
            "sqlite",
            _file_size(path),
        )
    watchers = getattr(store, "watcher_count", None)
    if isinstance(watchers, int):
        yield GaugeMetricFamily(
            "k3py_datastore_watchers", "Watches open on the datastore.", watchers
        )
    counts = getattr(store, "stats", None)
    if isinstance(counts, StoreStats):
        yield CounterMetricFamily(
            "k3py_datastore_writes", "Writes committed to the datastore.", counts.writes
        )
        yield CounterMetricFamily(
            "k3py_datastore_transactions",
            "Transactions that committed them (fewer than writes when commits are shared).",
            counts.transactions,
        )


def _labelled_gauge(name: str, doc: str, label: str, value: str, number: float) -> Metric:
    family = GaugeMetricFamily(name, doc, labels=(label,))
    family.add_metric((value,), number)
    return family
