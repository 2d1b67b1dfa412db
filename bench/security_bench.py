"""Hardening benchmark: server memory under connection storms and slow watchers, and the event
loop's responsiveness while patch bombs are refused.

``run()`` starts ``k3py server`` (embedded SQLite, loopback) and measures its RSS:

* idle, then holding 2,000 idle keep-alive TLS connections (each sent one ``/healthz``), and
  a few seconds after they closed (the server returns freed memory to the system);
* while a watch whose client never reads follows 600 writes of a 512 KiB ConfigMap, and after;
* ``/healthz`` latency (max and p99) while a doubling JSON patch and a YAML alias bomb are
  sent and refused, over and over.

``python -m bench.security_bench`` prints the result as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import ssl
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.server_bench import Endpoint, Server, _latencies

CM = "/api/v1/namespaces/default/configmaps"
HALF_MIB = 512 * 1024
BUDGETS = {"healthz_max_ms_during_bombs": 100.0}


def _context(endpoint: Endpoint) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=endpoint.ca)
    context.load_cert_chain(endpoint.cert, endpoint.key)
    return context


def _host_port(endpoint: Endpoint) -> tuple[str, int]:
    host, port = endpoint.url.removeprefix("https://").rsplit(":", 1)
    return host, int(port)


async def _idle_connections(endpoint: Endpoint, count: int) -> list[asyncio.StreamWriter]:
    host, port = _host_port(endpoint)
    context = _context(endpoint)
    writers: list[asyncio.StreamWriter] = []
    request = f"GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()

    async def one() -> None:
        reader, writer = await asyncio.open_connection(host, port, ssl=context)
        writer.write(request)
        await writer.drain()
        await reader.readuntil(b"ok")
        writers.append(writer)

    for start in range(0, count, 100):
        await asyncio.gather(*(one() for _ in range(min(100, count - start))))
    return writers


async def _close(writers: list[asyncio.StreamWriter]) -> None:
    for writer in writers:
        writer.close()
    await asyncio.sleep(0.5)


def _doubling_patch() -> bytes:
    ops: list[dict[str, Any]] = [
        {"op": "add", "path": "/metadata/annotations", "value": {}},
        {"op": "add", "path": "/metadata/annotations/x", "value": ["a" * 64]},
    ]
    ops += [
        {"op": "copy", "from": "/metadata/annotations/x", "path": "/metadata/annotations/x/-"}
    ] * 25
    return json.dumps(ops).encode()


def _yaml_bomb() -> bytes:
    lines = ["metadata:", "  name: bomb", "  labels:", '    l0: &l0 ["lol","lol","lol"]']
    lines += [f"    l{n}: &l{n} [" + ",".join([f"*l{n - 1}"] * 9) + "]" for n in range(1, 10)]
    return ("\n".join(lines) + "\n").encode()


async def _bombs_and_healthz(endpoint: Endpoint, seconds: float) -> dict[str, Any]:
    import aiohttp

    connector = aiohttp.TCPConnector(ssl=_context(endpoint))
    async with aiohttp.ClientSession(endpoint.url, connector=connector) as session:
        body = {"metadata": {"name": "target"}, "data": {"k": "v"}}
        async with session.post(CM, json=body) as reply:
            await reply.read()
        refused: dict[str, int] = {}

        async def bombs() -> None:
            while time.monotonic() < stop:
                for method, path, data, kind in (
                    ("PATCH", f"{CM}/target", _doubling_patch(), "application/json-patch+json"),
                    ("POST", CM, _yaml_bomb(), "application/yaml"),
                ):
                    headers = {"Content-Type": kind}
                    async with session.request(method, path, data=data, headers=headers) as r:
                        await r.read()
                        refused[str(r.status)] = refused.get(str(r.status), 0) + 1

        async def healthz(until: Callable[[], bool]) -> list[float]:
            latencies: list[float] = []
            while not until():
                started = time.monotonic()
                async with session.get("/healthz") as reply:
                    await reply.read()
                latencies.append(time.monotonic() - started)
                await asyncio.sleep(0.01)
            return latencies

        # The same probe without bombs first: on a busy machine scheduling alone costs time.
        quiet_until = time.monotonic() + min(seconds, 5.0)
        quiet = await healthz(lambda: time.monotonic() > quiet_until)
        stop = time.monotonic() + seconds
        task = asyncio.create_task(bombs())
        loaded = await healthz(task.done)
        await task
    return {
        "healthz": _latencies(loaded),
        "healthz_without_bombs": _latencies(quiet),
        "bomb_answers": refused,
    }


async def _silent_watch(endpoint: Endpoint, server: Server, writes: int) -> dict[str, Any]:
    import aiohttp

    host, port = _host_port(endpoint)
    raw = socket.create_connection((host, port))
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    watcher = _context(endpoint).wrap_socket(raw, server_hostname=host)
    watcher.sendall(f"GET {CM}?watch=true HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    connector = aiohttp.TCPConnector(ssl=_context(endpoint))
    peak = server.rss_mb()
    async with aiohttp.ClientSession(endpoint.url, connector=connector) as session:
        body: dict[str, Any] = {"metadata": {"name": "big"}, "data": {"k": "x" * HALF_MIB}}
        async with session.post(CM, json=body) as reply:
            await reply.read()
        for step in range(writes):
            body["data"] = {"k": str(step % 10) * HALF_MIB}
            async with session.put(f"{CM}/big", json=body) as reply:
                await reply.read()
            if step % 50 == 0:
                peak = max(peak, server.rss_mb())
    during = server.rss_mb()
    watcher.close()
    await asyncio.sleep(2)
    return {"rss_peak_mb": max(peak, during), "rss_after_mb": server.rss_mb()}


async def _measure(endpoint: Endpoint, server: Server, quick: bool) -> dict[str, Any]:
    result: dict[str, Any] = {"rss_idle_mb": server.rss_mb()}
    writers = await _idle_connections(endpoint, 400 if quick else 2000)
    result["idle_connections"] = len(writers)
    result["rss_with_idle_connections_mb"] = server.rss_mb()
    await _close(writers)
    await asyncio.sleep(TRIM_WAIT_SECONDS)
    result["rss_after_connections_closed_mb"] = server.rss_mb()
    result["silent_watch"] = await _silent_watch(endpoint, server, 60 if quick else 600)
    result["bombs"] = await _bombs_and_healthz(endpoint, 3.0 if quick else 10.0)
    return result


# The server returns freed memory about 2 s after connections drop.
TRIM_WAIT_SECONDS = 4.0


def run(*, quick: bool = False, directory: Path | None = None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="k3py-security-bench-") as tmp:
        root = directory or Path(tmp)
        server = Server(root, "normal")
        endpoint = server.start()
        try:
            time.sleep(1.0)
            result = asyncio.run(_measure(endpoint, server, quick))
        finally:
            server.stop()
    healthz = result["bombs"]["healthz"]
    result["summary"] = {
        "rss_idle_mb": result["rss_idle_mb"],
        "rss_2000_idle_connections_mb": result["rss_with_idle_connections_mb"],
        "rss_after_they_closed_mb": result["rss_after_connections_closed_mb"],
        "rss_silent_watch_peak_mb": result["silent_watch"]["rss_peak_mb"],
        "rss_after_silent_watch_mb": result["silent_watch"]["rss_after_mb"],
        "healthz_max_ms_during_bombs": healthz["max_ms"],
        "healthz_p99_ms_during_bombs": healthz["p99_ms"],
    }
    limit = BUDGETS["healthz_max_ms_during_bombs"]
    result["budget"] = {
        "healthz_max_ms_during_bombs_max": limit,
        "met": "yes" if healthz["max_ms"] <= limit else "no",
    }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    print(json.dumps(run(quick=args.quick), indent=2))


if __name__ == "__main__":
    main()
