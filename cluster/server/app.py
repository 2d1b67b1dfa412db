"""The API server application: middlewares, routes, lifecycle, and the process that serves it.

:func:`create_app` assembles an aiohttp application from its parts (datastore, authenticator,
optional supervisor endpoints) with all state under typed keys and the background work (the
datastore, the default objects, the garbage collector) owned by the application's lifecycle.
:func:`serve` is what ``k3py server`` runs: it creates or loads the PKI and join token, opens the
datastore, listens with TLS, writes the admin kubeconfig, and stops cleanly on SIGTERM/SIGINT.
Every error leaves as a Kubernetes ``Status``; unexpected ones are logged with their traceback
and answered with a 500 Status that carries none.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import platform
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Handler

from k3py import __version__
from k3py.cluster.api import status
from k3py.cluster.server import apiservers, crds, discovery
from k3py.cluster.server.auth import CONNECT_PATH
from k3py.cluster.server.metrics import health, resource_api
from k3py.cluster.server.metrics import nodeproxy as metrics_nodeproxy
from k3py.cluster.server.metrics.apiserver import METRICS_PATH, ServerMetrics
from k3py.cluster.server.metrics.datastore import TimedDatastore
from k3py.cluster.server.rest import bootstrap, garbage, routes
from k3py.cluster.server.rest.access import AUTHENTICATOR, RequestAuthenticator, authentication
from k3py.cluster.server.rest.context import REST, RestContext
from k3py.cluster.server.rest.http import json_response, status_response
from k3py.cluster.server.rest.objects import ObjectStore
from k3py.cluster.server.settings import ServerSettings
from k3py.cluster.server.store import Datastore, StoreError, Unavailable
from k3py.cluster.server.store.endpoint import redact_endpoint
from k3py.cluster.server.tunnel import TUNNELS
from k3py.errors import K3pyError
from k3py.shutdown import cancel_and_wait, until_signalled

logger = logging.getLogger("k3py.server")

KUBERNETES_VERSION = (1, 32, 0)
SETTINGS = web.AppKey("k3py.settings", ServerSettings)
DATASTORE = web.AppKey("k3py.datastore", Datastore)
READY = web.AppKey("k3py.ready", asyncio.Event)
ADVERTISE = web.AppKey("k3py.advertise", str)

# Written once the datastore of this data dir has started: the cluster exists from then on.
CLUSTER_CREATED = "cluster-created"
_MUTATING_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_PLATFORMS = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "armv6l": "arm"}


def version_info() -> dict[str, str]:
    major, minor, patch = KUBERNETES_VERSION
    machine = platform.machine().lower()
    return {
        "major": str(major),
        "minor": str(minor),
        "gitVersion": f"v{major}.{minor}.{patch}-k3py1",
        "gitCommit": __version__,
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
        "goVersion": f"python{platform.python_version()}",
        "compiler": sys.implementation.name,
        "platform": f"{sys.platform}/{_PLATFORMS.get(machine, machine)}",
    }


@dataclass
class InFlight:
    """kube-apiserver's max-in-flight filter: requests beyond the limits get 429."""

    limit: int
    mutating_limit: int
    reading: int = 0
    mutating: int = 0


LIMITS = web.AppKey("k3py.limits", InFlight)
METRICS = web.AppKey("k3py.metrics", ServerMetrics)


def _long_running(request: web.Request) -> bool:
    watch = request.query.get("watch", "").lower() in ("1", "true")
    # The agent tunnel, exec sessions and followed logs stay open as long as their user wants.
    streaming = request.path == CONNECT_PATH or request.path.endswith(("/exec", "/log"))
    return watch or streaming or "/watch/" in request.path


@web.middleware
async def access_log(request: web.Request, handler: Handler) -> web.StreamResponse:
    """One debug line per request (``k3py --debug server``); free when debug is off."""
    if not logger.isEnabledFor(logging.DEBUG):
        return await handler(request)
    started = time.perf_counter()
    response = await handler(request)
    logger.debug(
        "request",
        extra={
            "fields": {
                "method": request.method,
                "uri": request.rel_url,
                "status": response.status,
                "ms": round((time.perf_counter() - started) * 1000, 1),
            }
        },
    )
    return response


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure becomes a Status; nothing unexpected leaks a traceback to the client."""
    try:
        return await handler(request)
    except status.ApiError as err:
        return status_response(err)
    except web.HTTPException as exc:
        if exc.status == 404:
            return status_response(status.path_not_found(request.path))
        if exc.status == 405:
            return status_response(status.method_not_allowed(request.method, request.path))
        if exc.status == 413:
            limit = request.app[SETTINGS].max_request_body_bytes
            return status_response(status.request_entity_too_large(limit))
        if exc.status < 400:
            raise
        return status_response(status.ApiError(exc.status, exc.reason, exc.text or exc.reason))
    except asyncio.CancelledError:
        raise
    except Unavailable as err:  # a shared database restarting: the client retries
        logger.warning("datastore unavailable", extra={"fields": {"error": str(err)}})
        return status_response(
            status.ApiError(503, "ServiceUnavailable", str(err), retry_after_seconds=1)
        )
    except StoreError as err:
        logger.error("datastore error", extra={"fields": {"path": request.path, "error": str(err)}})
        return status_response(status.internal(f"the datastore failed: {err}"))
    except Exception:
        logger.exception(
            "request failed", extra={"fields": {"method": request.method, "path": request.path}}
        )
        return status_response(status.internal("an unexpected error occurred; see the server log"))


@web.middleware
async def in_flight(request: web.Request, handler: Handler) -> web.StreamResponse:
    if _long_running(request):
        return await handler(request)
    limits = request.app[LIMITS]
    mutating = request.method in _MUTATING_METHODS
    if mutating:
        if limits.mutating >= limits.mutating_limit:
            raise status.too_many_requests(1)
        limits.mutating += 1
    else:
        if limits.reading >= limits.limit:
            raise status.too_many_requests(1)
        limits.reading += 1
    try:
        return await handler(request)
    finally:
        if mutating:
            limits.mutating -= 1
        else:
            limits.reading -= 1


async def version(request: web.Request) -> web.Response:
    return json_response(version_info())


def _datastore_check(datastore: Datastore) -> health.Check:
    async def check() -> str | None:
        await datastore.get("/registry/namespaces/default")
        return None

    return check


def _running(task: asyncio.Task[None]) -> health.Check:
    async def check() -> str | None:
        return "the control plane stopped" if task.done() else None

    return check


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    """Start the datastore, put the default objects in place, run the collector; undo in order."""
    datastore = app[DATASTORE]
    ctx = app[REST]
    settings = app[SETTINGS]
    await datastore.start()
    collector: asyncio.Task[None] | None = None
    crd_follower: asyncio.Task[None] | None = None
    leasing: asyncio.Task[None] | None = None
    try:
        await bootstrap.ensure_defaults(ctx, app[ADVERTISE], settings.https_listen_port or 6443)
        collector = asyncio.create_task(
            _restarting("garbage collector", lambda: garbage.run_collector(ctx), app[CRASHED]),
            name="k3py-collector",
        )
        collector.add_done_callback(_report_crash)
        crd_loop = await crds.start_follower(ctx)
        crd_follower = asyncio.create_task(
            _restarting("CRD follower", crd_loop, app[CRASHED]),
            name="k3py-crd-follower",
        )
        crd_follower.add_done_callback(_report_crash)
        if getattr(datastore, "shared", False):  # several servers: each keeps its own entry
            lease = apiservers.ApiServerLease(
                ctx, app[ADVERTISE], settings.https_listen_port or 6443
            )
            await apiservers.renew_quietly(lease)
            leasing = asyncio.create_task(
                apiservers.run_apiserver_lease(lease, ctx.stopping), name="k3py-apiserver-lease"
            )
        app[READY].set()
        yield
    finally:
        ctx.stopping.set()
        await apiservers.stop(leasing)
        await cancel_and_wait(collector)
        await cancel_and_wait(crd_follower)
        await datastore.close()


# A background loop that failed: its name and why, until its restart has run a while.
CRASHED = web.AppKey("k3py.crashed", dict)
RESTART_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0)
HEALTHY_AFTER_SECONDS = 30.0
RECOVERED_AFTER_SECONDS = 5.0


async def _restarting(
    name: str, loop: Callable[[], Awaitable[None]], crashed: dict[str, str]
) -> None:
    """Run ``loop`` for good: when it fails, /readyz says so and it is started again."""
    failures = 0
    while True:
        started = time.monotonic()
        try:
            await loop()
            return
        except asyncio.CancelledError:
            raise
        except Exception as err:
            if time.monotonic() - started > HEALTHY_AFTER_SECONDS:
                failures = 0
            delay = RESTART_DELAYS[min(failures, len(RESTART_DELAYS) - 1)]
            failures += 1
            crashed[name] = f"{name} failed ({type(err).__name__}: {err}); restarting"
            logger.error(
                "background task failed; restarting",
                exc_info=err,
                extra={"fields": {"task": name, "in_seconds": delay}},
            )
        await asyncio.sleep(delay)
        # Ready again once the restarted loop has kept running for a little while.
        asyncio.get_running_loop().call_later(
            RECOVERED_AFTER_SECONDS, _recovered, crashed, name, crashed.get(name)
        )


def _recovered(crashed: dict[str, str], name: str, message: str | None) -> None:
    # The same message object: no failure since (a new failure stores a new string).
    if crashed.get(name) is message:
        crashed.pop(name, None)


def _background_check(crashed: dict[str, str]) -> health.Check:
    async def check() -> str | None:
        return "; ".join(crashed.values()) or None

    return check


def _report_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("background task stopped", exc_info=task.exception())


async def _stop_watches(app: web.Application) -> None:
    app[REST].stopping.set()


def create_app(
    settings: ServerSettings,
    datastore: Datastore,
    authenticator: RequestAuthenticator,
    *,
    advertise_address: str = "127.0.0.1",
) -> web.Application:
    """The API server as an aiohttp application (not yet listening)."""
    metrics = ServerMetrics()
    app = web.Application(
        # Metrics first: they see every answer, the Statuses the error middleware makes too.
        middlewares=[metrics.middleware, access_log, errors, in_flight, authentication],
        client_max_size=settings.max_request_body_bytes,
        handler_args={"max_field_size": 16384},
    )
    app[SETTINGS] = settings
    app[DATASTORE] = datastore
    app[AUTHENTICATOR] = authenticator
    app[LIMITS] = InFlight(settings.max_requests_inflight, settings.max_mutating_requests_inflight)
    app[READY] = asyncio.Event()
    app[ADVERTISE] = advertise_address
    app[REST] = RestContext(settings, ObjectStore(TimedDatastore(datastore, metrics)))
    app[METRICS] = metrics
    limits = app[LIMITS]
    metrics.scrape_state.inflight = lambda: (limits.reading, limits.mutating)
    metrics.scrape_state.is_long_running = _long_running
    metrics.scrape_state.datastore = datastore
    app.router.add_get(METRICS_PATH, metrics.handle)
    app.router.add_get("/version", version)
    app.router.add_get("/version/", version)
    health.add_routes(app, app[READY], app[REST].stopping)
    health.add_check(app, "etcd", _datastore_check(datastore), live=True)
    app[CRASHED] = {}
    health.add_check(app, "poststarthook/k3py-background-tasks", _background_check(app[CRASHED]))
    resource_api.add_routes(app)
    metrics_nodeproxy.add_routes(app)
    discovery.add_routes(app)
    routes.add_routes(app)
    from k3py.cluster.server import openapi

    openapi.add_routes(app)
    from k3py.cluster.server import otabundles

    otabundles.add_routes(app, settings)
    app.cleanup_ctx.append(_lifecycle)
    # aiohttp's Signal annotation disagrees with aiosignal's generics; the call is correct.
    app.on_shutdown.append(_stop_watches)  # type: ignore[arg-type]
    return app


# asyncio gives every TLS connection a 256 KiB read buffer; with hundreds of agents and
# clients connected that alone would be tens of MB. TLS records are at most 16 KiB, so a
# 32 KiB buffer still reads whole records.
TLS_READ_BUFFER = 32 * 1024
GC_THRESHOLD = 10_000  # allocations between collections of the youngest generation


def _small_tls_buffers() -> None:
    """Shrink asyncio's per-connection TLS buffer in this (the server's own) process."""
    from asyncio import sslproto

    sslproto.SSLProtocol.max_size = TLS_READ_BUFFER


def _quiet_gc() -> None:
    """Keep the cyclic garbage collector off the request path once the server is up.

    Under 1,000 creates/s the collector's passes over everything start-up made (modules, the
    OpenAPI documents, the PKI) took 20-90 ms each and found nothing to free: they were the
    latency tail. Start-up objects are frozen out of its view, and the youngest generation is
    collected every 10,000 allocations instead of 700 (few request objects form cycles).
    """
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, 10, 10)


def advertise_address(settings: ServerSettings) -> str:
    """The address the ``kubernetes`` Endpoints point at: the bound one, else this machine's."""
    if settings.advertise_address:
        return settings.advertise_address
    if settings.bind_address not in ("0.0.0.0", "::", ""):
        return settings.bind_address
    from k3py.cluster.server.pki import machine_addresses

    for address in machine_addresses():
        if not address.startswith("127.") and ":" not in address:
            return address
    return "127.0.0.1"


async def serve(settings: ServerSettings) -> None:
    """Run the server until SIGTERM or SIGINT: PKI, token, datastore, TLS listener, kubeconfig."""
    from k3py.cluster.server import kubeconfig, pki, supervisor, token
    from k3py.cluster.server.auth import Authenticator
    from k3py.cluster.server.store import Retention, open_datastore

    _small_tls_buffers()
    from k3py.cluster.server import clusterjoin

    await clusterjoin.prepare(settings)  # servers on a shared datastore share one CA and token
    # A cluster whose CA predates this start and whose datastore once started (the marker is
    # written after that) had data: losing it is not a fresh start. A first start cut short
    # before its datastore opened leaves no marker and starts again normally.
    created_marker = settings.data_dir / "server" / CLUSTER_CREATED
    ca_existed = (settings.data_dir / "server" / "tls" / "server-ca.crt").exists()
    cluster_existed = ca_existed and created_marker.exists()
    cluster_pki = pki.ensure_pki(
        settings.data_dir, settings.tls_sans, service_cidr=settings.service_cidr
    )
    join_token = token.ensure_server_token(
        settings.data_dir, cluster_pki.ca_bundle(), settings.token
    )
    authenticator = Authenticator(cluster_pki, settings.data_dir)
    retention = Retention(
        min_revisions=settings.compact_min_revisions,
        min_age_seconds=settings.compact_min_age_seconds,
        interval_seconds=settings.compact_interval_seconds,
    )
    datastore = open_datastore(
        settings.datastore_endpoint,
        settings.data_dir,
        sync="full" if settings.datastore_sync == "full" else "normal",
        retention=retention,
        cluster_existed=cluster_existed,
        reset=settings.cluster_reset,
    )
    app = create_app(
        settings, datastore, authenticator, advertise_address=advertise_address(settings)
    )
    supervisor.add_routes(app, cluster_pki, join_token)
    from k3py.cluster.server import satoken

    app[satoken.SA_TOKENS] = satoken.ServiceAccountTokens(
        satoken.ensure_signing_key(settings.data_dir)
    )
    hub = app[TUNNELS]
    app[METRICS].scrape_state.tunnels = lambda: len(hub.nodes)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=5.0)
    await runner.setup()
    try:
        from k3py.cluster.server.connections import ConnectionLimits, GatedSite

        site = GatedSite(
            runner,
            settings.bind_address,
            settings.https_listen_port,
            ssl_context=cluster_pki.server_ssl_context(),
            backlog=1024,
            limits=ConnectionLimits(settings.max_connections, settings.max_connections_per_client),
        )
        try:
            await site.start()
        except OSError as err:
            raise ServerError(
                f"cannot listen on {settings.bind_address}:{settings.https_listen_port}: "
                f"{err.strerror or err} (is another server running? choose another"
                " --https-listen-port)"
            ) from None
        port = _bound_port(site, settings.https_listen_port)
        created_marker.touch(mode=0o600)
        kubeconfig.write_kubeconfig(
            settings.write_kubeconfig,
            settings.write_kubeconfig_mode,
            f"https://127.0.0.1:{port}",
            cluster_pki,
        )
        logger.info(
            "k3py server is ready",
            extra={
                "fields": {
                    "address": f"{settings.bind_address}:{port}",
                    "kubeconfig": str(settings.write_kubeconfig),
                    "datastore": redact_endpoint(settings.datastore_endpoint or "sqlite"),
                }
            },
        )
        from k3py.cluster.server.controllers.serving import run_in_server
        from k3py.cluster.server.metrics.controlplane import ControlPlaneMetrics

        stop_control = asyncio.Event()
        observer = ControlPlaneMetrics(app[METRICS].registry)
        control = asyncio.create_task(
            run_in_server(
                settings, cluster_pki, port, stop_control, observer=observer, rest=app[REST]
            ),
            name="k3py-control-plane",
        )
        health.add_check(app, "poststarthook/start-controllers", _running(control))
        health.add_check(app, "informer-sync", observer.informer_sync_check)
        control.add_done_callback(_report_crash)
        from k3py.cluster import sdnotify

        _quiet_gc()
        sdnotify.ready(f"serving on {settings.bind_address}:{port}")  # Type=notify units
        await until_signalled()
        logger.info("k3py server is stopping")
        sdnotify.stopping()
        stop_control.set()
        with contextlib.suppress(asyncio.TimeoutError, Exception):
            await asyncio.wait_for(control, 5.0)
    finally:
        await runner.cleanup()


class ServerError(K3pyError):
    """The server cannot start: the message says why and what to change."""


def _bound_port(site: web.TCPSite, wanted: int) -> int:
    server = site._server  # aiohttp exposes the listening sockets only here
    sockets = getattr(server, "sockets", None) or []
    for sock in sockets:
        return int(sock.getsockname()[1])
    return wanted
