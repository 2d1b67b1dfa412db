"""HTTP requests over the standard library's :mod:`http.client`, for an agent that is starting.

aiohttp is the client of everything that runs for long (watches, many requests at once), but
importing it is the largest single step of the agent's start: 1.8 s of an emulated ARMv7
board's CPU, shared with the container engine starting beside it. The join (two requests) and
the first registration (a handful, one after another) need none of what it adds, so they go
over :mod:`http.client` (which aiohttp imports anyway: no extra memory once both are loaded),
in a worker thread so that the event loop, which also serves the agent's loopback proxy to the
API server, keeps running. aiohttp is imported once the node is registered.

:class:`Connection` keeps one keep-alive connection and sends one request at a time (its
callers run it in a worker thread); :func:`fetch` is a single request on a connection of its own.
"""

from __future__ import annotations

import asyncio
import http.client
import ssl
import threading
from collections.abc import Mapping
from urllib.parse import urlencode, urlsplit

# A request that a reused keep-alive connection could not deliver (the server had closed it)
# is sent once more on a new connection, unless repeating it could do its work twice.
_STALE_CONNECTION = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)
_REPEATABLE = frozenset({"GET", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS"})


class Connection:
    """One connection to ``base_url`` (``http`` or ``https``), used by one request at a time.

    ``ssl_context`` None for an ``https`` URL verifies nothing (aiohttp's ``ssl=False``).
    """

    def __init__(
        self,
        base_url: str,
        ssl_context: ssl.SSLContext | None,
        headers: Mapping[str, str],
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._https else 80)
        self._prefix = parts.path.rstrip("/")
        if self._https and ssl_context is None:
            ssl_context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ssl_context.check_hostname = False
            ssl_context.verify_mode = ssl.CERT_NONE
        self._context = ssl_context
        self._headers = dict(headers)
        self._lock = threading.Lock()
        self._conn: http.client.HTTPConnection | None = None
        self._closing = False

    def _connect(self, timeout: float) -> http.client.HTTPConnection:
        if self._https:
            return http.client.HTTPSConnection(
                self._host, self._port, timeout=timeout, context=self._context
            )
        return http.client.HTTPConnection(self._host, self._port, timeout=timeout)

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        deadline: float = 30.0,
    ) -> tuple[int, bytes]:
        """The answer's status and body (blocking: run it in a worker thread). ``deadline``
        bounds each step (connect, send, every read). Raises OSError (ssl.SSLError,
        TimeoutError included) or :class:`http.client.HTTPException` when the server cannot be
        asked."""
        target = self._prefix + path + (f"?{urlencode(params)}" if params else "")
        sent = {**self._headers, **(headers or {})}
        try:
            with self._lock:
                return self._exchange(method, target, body, sent, deadline)
        finally:
            if self._closing:  # close() met the lock taken: whoever holds it last closes
                self.close()

    def _exchange(
        self, method: str, target: str, body: bytes | None, headers: dict[str, str], deadline: float
    ) -> tuple[int, bytes]:
        for attempt in (1, 2):
            reused = self._conn is not None
            if self._conn is None:
                self._conn = self._connect(deadline)
            conn = self._conn
            if conn.sock is not None:
                conn.sock.settimeout(deadline)
            try:
                conn.request(method, target, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
            except _STALE_CONNECTION:
                self._close_locked()
                if attempt == 2 or not reused or method not in _REPEATABLE:
                    raise
                continue
            except BaseException:
                self._close_locked()
                raise
            if response.will_close:
                self._close_locked()
            return response.status, data
        raise AssertionError("unreachable")  # pragma: no cover

    def _close_locked(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def close(self) -> None:
        """Close the connection now, or when the request in flight ends.

        Never waits: the event loop that calls this may be what the request in flight needs
        (the agent's loopback proxy to the API server runs on it).
        """
        self._closing = True
        if self._lock.acquire(blocking=False):
            try:
                self._close_locked()
            finally:
                self._lock.release()


async def fetch(
    url: str,
    method: str = "GET",
    *,
    ssl_context: ssl.SSLContext | None = None,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    deadline: float = 30.0,
) -> tuple[int, bytes]:
    """One request to ``url`` on a connection of its own: the status and the body."""
    parts = urlsplit(url)
    connection = Connection(f"{parts.scheme}://{parts.netloc}", ssl_context, {})
    path = parts.path or "/"
    if parts.query:
        path += f"?{parts.query}"
    try:
        return await asyncio.to_thread(
            connection.request, method, path, body=body, headers=headers, deadline=deadline
        )
    finally:
        connection.close()
