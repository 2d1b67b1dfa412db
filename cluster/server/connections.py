"""The server's connections: how many, how long they may idle, and errors before a request.

aiohttp accepts any number of connections, keeps one that never sends a request forever and
answers a request line or header that is too long with plain text. :class:`GatedSite` listens
like ``web.TCPSite`` but hands each connection to a :class:`GatedHandler`, which refuses
connections beyond a total and a per-client limit (loopback is exempt from the per-client one:
hollow nodes and local tools share it), closes a connection that has not sent a complete
request head within :data:`FIRST_REQUEST_SECONDS` (slow or idle clients), and answers parse
errors (a URL over 8 KiB, a header over 16 KiB, malformed HTTP) with a Kubernetes ``Status``.
When many connections have closed it asks glibc to return freed memory to the system
(``malloc_trim``), since CPython's allocator keeps the peak otherwise. aiohttp has no hooks for
any of this, so the handler subclasses its ``RequestHandler``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ipaddress
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import LineTooLong
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from k3py.cluster.api import status
from k3py.cluster.server.rest.http import json_response

logger = logging.getLogger("k3py.server.connections")

# The request line (URL) and each header, as kube-apiserver's Go HTTP server bounds them.
MAX_LINE_BYTES = 8 * 1024
MAX_FIELD_BYTES = 16 * 1024
HANDLER_ARGS: dict[str, Any] = {
    "max_line_size": MAX_LINE_BYTES,
    "max_field_size": MAX_FIELD_BYTES,
    # An idle kept-alive connection, or one trickling its next request head, is closed after
    # this long (aiohttp closes it only while no request head is complete).
    "keepalive_timeout": 75.0,
    # The server logs requests itself (the access_log middleware, with --debug).
    "access_log": None,
}
FIRST_REQUEST_SECONDS = 10.0
TLS_HANDSHAKE_SECONDS = 10.0
TRIM_INTERVAL_SECONDS = 10.0
TRIM_SETTLE_SECONDS = 2.0


@dataclass
class ConnectionLimits:
    """Open connections, in total and per client address."""

    max_total: int
    max_per_client: int
    first_request_seconds: float = FIRST_REQUEST_SECONDS
    total: int = 0
    per_client: dict[str, int] = field(default_factory=dict)
    peak_since_trim: int = 0
    last_trim: float = 0.0
    trim_scheduled: bool = False

    def admit(self, client: str) -> str | None:
        """Count a new connection, or say why it is refused."""
        if self.total >= self.max_total:
            return f"the server has {self.total} connections, its limit"
        count = self.per_client.get(client, 0)
        if count >= self.max_per_client and not _is_loopback(client):
            return f"client {client} has {count} connections, the limit per client"
        self.total += 1
        self.per_client[client] = count + 1
        self.peak_since_trim = max(self.peak_since_trim, self.total)
        return None

    def release(self, client: str) -> None:
        self.total -= 1
        count = self.per_client.get(client, 1) - 1
        if count > 0:
            self.per_client[client] = count
        else:
            self.per_client.pop(client, None)
        storm_over = self.peak_since_trim >= 256 and self.total <= self.peak_since_trim // 2
        if storm_over and not self.trim_scheduled:
            # Once the storm has settled (and not more often than every few seconds).
            wait = max(
                TRIM_SETTLE_SECONDS, self.last_trim + TRIM_INTERVAL_SECONDS - time.monotonic()
            )
            self.trim_scheduled = True
            asyncio.get_running_loop().call_later(wait, self._trim)

    def _trim(self) -> None:
        self.trim_scheduled = False
        self.last_trim = time.monotonic()
        self.peak_since_trim = self.total
        release_memory()


def _is_loopback(client: str) -> bool:
    try:
        return ipaddress.ip_address(client).is_loopback
    except ValueError:
        return True  # a Unix socket or test transport: local


def release_memory() -> None:
    """Give freed heap pages back to the system (glibc only; elsewhere nothing happens)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _parse_error(exc: BaseException | None) -> status.ApiError:
    if isinstance(exc, LineTooLong):
        text = str(exc)
        if "Status line" in text or "request line" in text.lower():
            return status.ApiError(
                414, "RequestURITooLong", f"the request URL is over {MAX_LINE_BYTES} bytes"
            )
        return status.ApiError(
            431,
            "RequestHeaderFieldsTooLarge",
            f"a request header is over {MAX_FIELD_BYTES} bytes",
        )
    detail = getattr(exc, "message", None) or str(exc or "")
    return status.bad_request(f"malformed HTTP request: {detail}"[:512])


class GatedHandler(RequestHandler):
    """aiohttp's connection handler with the limits and Status errors described above."""

    def __init__(self, manager: web.Server, *, limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._limits = limits
        self._client: str | None = None
        self._first_request: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        client = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        refusal = self._limits.admit(client)
        super().connection_made(transport)
        if refusal is not None:
            logger.warning("connection refused", extra={"fields": {"reason": refusal}})
            self.force_close()
            transport.close()
            return
        self._client = client
        loop = asyncio.get_running_loop()
        self._first_request = loop.call_later(
            self._limits.first_request_seconds, self._no_request_yet
        )

    def _no_request_yet(self) -> None:
        self._first_request = None
        if self._request_count == 0 and self.transport is not None:
            self.force_close()
            self.transport.close()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._first_request is not None:
            self._first_request.cancel()
            self._first_request = None
        if self._client is not None:
            self._limits.release(self._client)
            self._client = None
        super().connection_lost(exc)

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status != 400:
            return super().handle_error(request, status, exc, message)
        if request.writer.output_size > 0:
            raise ConnectionError("the response has started; cannot send the error")
        logger.debug("malformed request", extra={"fields": {"error": str(exc)}})
        error = _parse_error(exc)
        response = json_response(error.to_status(), code=error.code)
        response.force_close()
        return response


class GatedSite(web.TCPSite):
    """``web.TCPSite`` whose connections go through :class:`GatedHandler`."""

    def __init__(
        self, runner: web.AppRunner, host: str, port: int, *, limits: ConnectionLimits, **kw: Any
    ) -> None:
        super().__init__(runner, host, port, **kw)
        self.limits = limits

    async def start(self) -> None:
        await web.BaseSite.start(self)
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None
        limits = self.limits

        def handler() -> GatedHandler:
            return GatedHandler(server, loop=loop, limits=limits, **HANDLER_ARGS)

        self._server = await loop.create_server(
            handler,
            self._host,
            self._port,
            ssl=self._ssl_context,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
            reuse_port=self._reuse_port,
            ssl_handshake_timeout=TLS_HANDSHAKE_SECONDS if self._ssl_context else None,
        )
