"""The agent's ``/healthz`` on a local port (the kubelet's 10248), for the board's supervisor.

A watchdog (systemd, monit, a shell loop) asks ``http://127.0.0.1:10248/healthz`` and restarts
the agent when it does not answer ``ok``. The answer is 200 ``ok`` while every check passes,
else 500 with one ``[-]name failed`` line per failing check (``?verbose`` lists all, as the
kubelet does). It is served by a few lines over :func:`asyncio.start_server` rather than by
aiohttp's server, whose import alone would cost the agent about 2 MB of its 45 MB budget for
one fixed answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

logger = logging.getLogger("k3py.agent.healthz")

HealthCheck = Callable[[], str | None]  # None: healthy; else the reason
DEFAULT_PORT = 10248
READ_TIMEOUT = 5.0


def render(checks: dict[str, HealthCheck], verbose: bool) -> tuple[int, str]:
    results = {name: check() for name, check in checks.items()}
    failed = any(reason is not None for reason in results.values())
    if not failed and not verbose:
        return 200, "ok"
    lines = [
        f"[+]{name} ok" if reason is None else f"[-]{name} failed: {reason}"
        for name, reason in results.items()
    ]
    lines.append(f"healthz check {'failed' if failed else 'passed'}")
    return (500 if failed else 200), "\n".join(lines) + "\n"


class HealthServer:
    def __init__(self, address: str, port: int, checks: dict[str, HealthCheck]) -> None:
        self.address = address
        self.port = port
        self.checks = checks
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        """Listen; a taken port is logged, not fatal (the agent's work matters more)."""
        try:
            self._server = await asyncio.start_server(self._serve, self.address, self.port)
        except OSError as err:
            logger.warning(
                "healthz not served",
                extra={"fields": {"address": f"{self.address}:{self.port}", "error": str(err)}},
            )
            return
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(READ_TIMEOUT):
                request = await reader.readuntil(b"\r\n\r\n")
            method, _, rest = request.decode("latin-1").partition(" ")
            target = rest.split(" ", 1)[0]
            path, _, query = target.partition("?")
            if method not in ("GET", "HEAD") or path.rstrip("/") != "/healthz":
                code, body = 404, "404 page not found\n"
            else:
                code, body = render(self.checks, "verbose" in query.split("&"))
            payload = body.encode()
            reason = {200: "OK", 404: "Not Found", 500: "Internal Server Error"}[code]
            head = (
                f"HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n"
                f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode() + (b"" if method == "HEAD" else payload))
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
