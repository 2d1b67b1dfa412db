"""The API server's Prometheus metrics: one registry per application, served at ``/metrics``.

:class:`ServerMetrics` owns the server's :class:`k3py.cluster.api.metricseries.Registry` (one
per application, so two servers in one process, as in tests, keep apart; prometheus_client is
loaded at the first scrape) and the request middleware
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

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from k3py.cluster.api import status
from k3py.cluster.api.metricseries import (
    CONTENT_TYPE,
    MetricsUnavailable,
    Registry,
    counter_family,
    gauge_family,
    labelled_gauge,
)
from k3py.cluster.api.resources import by_plural
from k3py.cluster.server.rest.http import TARGET_KEY, RequestTarget, parse_target
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
        self.registry = registry = Registry()
        labels = (*_REQUEST_LABELS, "component")
        self.requests = registry.counter(
            "apiserver_request_total",
            "Counter of apiserver requests broken out for each verb, dry run value, group,"
            " version, resource, scope, component, and HTTP response code.",
            (*labels, "code"),
        )
        self.durations = registry.histogram(
            "apiserver_request_duration_seconds",
            "Response latency distribution in seconds for each verb, dry run value, group,"
            " version, resource, subresource, scope and component.",
            labels,
            REQUEST_BUCKETS,
        )
        self.longrunning = registry.gauge(
            "apiserver_longrunning_requests",
            "Gauge of all active long-running apiserver requests (watches, exec, logs).",
            labels,
        )
        self.storage = registry.histogram(
            "etcd_request_duration_seconds",
            "Datastore request latency in seconds for each operation and object type.",
            ("operation", "type"),
            STORAGE_BUCKETS,
        )
        self.storage_errors = registry.counter(
            "k3py_datastore_request_errors_total",
            "Datastore requests that failed (conflicts and missing keys included).",
            ("operation", "type"),
        )
        self.scrape_state = ScrapeState()
        registry.register(lambda: _state_families(self.scrape_state))
        registry.register(self._watcher_families)

    def _watcher_families(self) -> Iterable[Any]:
        """kube-apiserver's watch count per kind, from the open long-running WATCH requests."""
        counts: dict[tuple[str, str, str], float] = {}
        for labels, value in self.longrunning.values.items():
            verb, _, group, version, plural = labels[:5]
            info = by_plural(group, version, plural) if verb == "WATCH" else None
            if info is not None:
                key = (group, version, info.kind)
                counts[key] = counts.get(key, 0.0) + value
        family = labelled_gauge(
            "apiserver_registered_watchers",
            "Number of currently registered watchers for a given resources",
            ("group", "version", "kind"),
        )
        for key, value in counts.items():
            family.add_metric(key, value)
        yield family

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Count and time every request; long-running ones are counted, not timed."""
        started = time.perf_counter()
        long_running = self.scrape_state.is_long_running(request)
        watching: tuple[str, ...] = ()
        if long_running:
            # Labelled now, before the handlers run: parse the target the auth middleware
            # would parse next (it is cached on the request).
            with contextlib.suppress(status.ApiError):
                if request.path.startswith(("/api/", "/apis/")):
                    parse_target(request)
            watching = (*request_labels(request), COMPONENT)
            self.longrunning.inc(watching)
        code = 500
        try:
            response = await handler(request)
            code = response.status
            return response
        except web.HTTPException as exc:
            code = exc.status
            raise
        except (asyncio.CancelledError, ConnectionError):
            # The error middleware turns failures into Statuses, so what gets here from a
            # stream is its client leaving after the 200 went out.
            if long_running:
                code = 200
            raise
        finally:
            labels = (*request_labels(request), COMPONENT)
            if watching:
                self.longrunning.inc(watching, -1)
            self.requests.inc((*labels, str(code)))
            if not long_running:
                self.durations.observe(labels, time.perf_counter() - started)

    async def handle(self, request: web.Request) -> web.Response:
        """``GET /metrics``: the registry in Prometheus' text format."""
        try:
            body = self.registry.exposition()
        except MetricsUnavailable as err:
            raise status.ApiError(503, "ServiceUnavailable", str(err)) from None
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


class ScrapeState:
    """What the collector reads at scrape time; the server fills in the sources it has."""

    def __init__(self) -> None:
        self.inflight: Callable[[], tuple[int, int]] | None = None
        self.is_long_running: Callable[[web.Request], bool] = lambda _: False
        self.datastore: Any = None
        self.tunnels: Callable[[], int] | None = None


def _file_size(path: Path) -> int:
    total = 0
    for suffix in ("", "-wal"):
        with contextlib.suppress(OSError):
            total += (path.parent / (path.name + suffix)).stat().st_size
    return total


def _state_families(state: ScrapeState) -> Iterable[Any]:
    if state.inflight is not None:
        reading, mutating = state.inflight()
        family = labelled_gauge(
            "apiserver_current_inflight_requests",
            "Maximal number of currently used inflight request limit of this apiserver per"
            " request kind in last second.",
            ("request_kind",),
        )
        family.add_metric(("readOnly",), reading)
        family.add_metric(("mutating",), mutating)
        yield family
    yield from _datastore_families(state.datastore)
    if state.tunnels is not None:
        yield gauge_family(
            "k3py_agent_tunnels", "Agents connected through their tunnel.", state.tunnels()
        )


def _datastore_families(store: Any) -> Iterable[Any]:
    if store is None:
        return
    yield gauge_family(
        "k3py_datastore_current_revision",
        "The datastore's latest revision (resourceVersion).",
        store.current_revision,
    )
    yield gauge_family(
        "k3py_datastore_compact_revision",
        "The revision up to which the datastore's history has been compacted.",
        store.compact_revision,
    )
    path = getattr(store, "path", None)
    if isinstance(path, Path):
        family = labelled_gauge(
            "apiserver_storage_size_bytes",
            "Size of the storage database file physically allocated in bytes.",
            ("storage_cluster_id",),
        )
        family.add_metric(("sqlite",), _file_size(path))
        yield family
    watchers = getattr(store, "watcher_count", None)
    if isinstance(watchers, int):
        yield gauge_family("k3py_datastore_watchers", "Watches open on the datastore.", watchers)
    counts = getattr(store, "stats", None)
    if isinstance(counts, StoreStats):
        yield counter_family(
            "k3py_datastore_writes", "Writes committed to the datastore.", counts.writes
        )
        yield counter_family(
            "k3py_datastore_transactions",
            "Transactions that committed them (fewer than writes when commits are shared).",
            counts.transactions,
        )
