"""``/healthz``, ``/livez`` and ``/readyz`` with their individual checks, as kube-apiserver has.

Each endpoint runs its named checks; ``?verbose`` lists them (``[+]ping ok`` …, then ``livez
check passed``), ``?exclude=NAME`` skips one, and ``/readyz/NAME`` runs one alone. A failure
answers 500 with ``[-]NAME failed: reason withheld`` (kube-apiserver withholds reasons from
anonymous callers too; the server log has them). Liveness asks only whether this process works
(ping, log, the datastore answering); readiness adds what serving needs: the default objects in
place, the control plane running, and not shutting down. The server adds checks as its parts
start (:func:`add_check`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

logger = logging.getLogger("k3py.server.health")

Check = Callable[[], Awaitable[str | None]]  # None: healthy; else why not
CHECK_TIMEOUT = 5.0


@dataclass
class HealthChecks:
    livez: dict[str, Check] = field(default_factory=dict)
    readyz: dict[str, Check] = field(default_factory=dict)


HEALTH = web.AppKey("k3py.health", HealthChecks)


async def _ok() -> str | None:
    return None


def add_check(app: web.Application, name: str, check: Check, *, live: bool = False) -> None:
    """Add a readiness check (and a liveness one when ``live``) to ``app``."""
    checks = app[HEALTH]
    checks.readyz[name] = check
    if live:
        checks.livez[name] = check


async def _run(name: str, check: Check) -> str | None:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            return await check()
    except asyncio.CancelledError:
        raise
    except Exception as err:
        return f"{type(err).__name__}: {err}"


def _truthy(request: web.Request, name: str) -> bool:
    return name in request.query and request.query[name].lower() not in ("0", "false")


def _endpoint(kind: str, which: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def serve(request: web.Request) -> web.Response:
        checks: dict[str, Check] = getattr(request.app[HEALTH], which)
        only = request.match_info.get("check")
        if only is not None:
            if only not in checks:
                raise web.HTTPNotFound()
            selected = {only: checks[only]}
        else:
            excluded = set(request.query.getall("exclude", []))
            selected = {n: c for n, c in checks.items() if n not in excluded}
        names = list(selected)
        results = await asyncio.gather(*(_run(n, selected[n]) for n in names))
        failed = [(n, r) for n, r in zip(names, results, strict=True) if r is not None]
        for name, reason in failed:
            logger.info(f"{kind} check failed", extra={"fields": {"check": name, "reason": reason}})
        if not failed and not _truthy(request, "verbose"):
            return web.Response(text="ok", content_type="text/plain")
        lines = [
            f"[-]{n} failed: reason withheld" if r is not None else f"[+]{n} ok"
            for n, r in zip(names, results, strict=True)
        ]
        if only is None:
            lines.append(f"{kind} check {'failed' if failed else 'passed'}")
        return web.Response(
            status=500 if failed else 200, text="\n".join(lines) + "\n", content_type="text/plain"
        )

    return serve


def add_routes(app: web.Application, ready: asyncio.Event, stopping: asyncio.Event) -> None:
    """Serve the health endpoints with the checks every server has."""

    async def bootstrap() -> str | None:
        return None if ready.is_set() else "the default objects are not in place yet"

    async def shutdown() -> str | None:
        return "the server is shutting down" if stopping.is_set() else None

    checks = app[HEALTH] = HealthChecks()
    for name in ("ping", "log"):
        checks.livez[name] = checks.readyz[name] = _ok
    checks.readyz["poststarthook/k3py-bootstrap"] = bootstrap
    checks.readyz["shutdown"] = shutdown
    for kind in ("healthz", "livez", "readyz"):
        # /healthz is kube-apiserver's older name for the liveness checks.
        handler = _endpoint(kind, "readyz" if kind == "readyz" else "livez")
        app.router.add_get(f"/{kind}", handler)
        app.router.add_get(f"/{kind}/{{check:.+}}", handler)
