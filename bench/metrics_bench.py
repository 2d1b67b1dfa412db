"""Cost of the metrics: server RSS and API write p99 without and with a scrape every 5 s.

``run()`` starts one ``k3py server`` (embedded SQLite, loopback) and drives it from a separate
process at 200 writes/s (unconditional PUTs of a fixed pool of ~1 KB ConfigMaps, so the store
does not grow). One continuous load is cut into 5 s windows that alternate: a window with a
``GET /metrics`` at its start (Prometheus scraping every 5 s) and a window without. Each write
is counted in the window it was scheduled in, so both kinds share the same run, server and
machine noise; the write p99 of each kind is compared. For memory, a second server of the same
run gets the same writes and is never scraped (prometheus_client never loaded): the cost is the
difference of the two servers' RSS at the end. Goal: at most 3 MB and 5 % more p99.
``python -m bench.metrics_bench`` prints the result.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import main
from bench.server_bench import (
    NAMESPACE,
    Endpoint,
    Server,
    _configmap,
    _latencies,
    _offered,
    _session,
)

RATE = 200
POOL = 200
WINDOW = 5.0
GOALS = {"rss_increase_mb": 3.0, "write_p99_increase_percent": 5.0}


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


async def _scrapes(session: Any, start: float, windows: int) -> list[tuple[float, int]]:
    """One scrape at the start of every other window (the odd ones)."""
    loop = asyncio.get_running_loop()
    found = []
    for window in range(1, windows, 2):
        await asyncio.sleep(max(0.0, start + window * WINDOW - loop.time()))
        began = loop.time()
        async with session.get("/metrics") as response:
            body = await response.read()
            if response.status != 200:
                raise RuntimeError(f"/metrics answered {response.status}")
        found.append((loop.time() - began, len(body)))
    return found


async def _alternating(session: Any, seconds: float) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    count = int(RATE * seconds)
    windows = int(seconds / WINDOW)
    path = f"/api/v1/namespaces/{NAMESPACE}/configmaps"
    latencies: dict[bool, list[float]] = {False: [], True: []}
    failures = 0
    start = loop.time() + 0.1

    async def one(index: int) -> None:
        nonlocal failures
        scheduled = start + index / RATE
        scraped = int((scheduled - start) / WINDOW) % 2 == 1
        await asyncio.sleep(max(0.0, scheduled - loop.time()))
        name = f"pool-{index % POOL}"
        try:
            async with session.put(f"{path}/{name}", json=_configmap(name, str(index))) as answer:
                await answer.read()
                ok = answer.status == 200
        except Exception:  # counted, not fatal
            ok = False
        if ok:
            latencies[scraped].append(loop.time() - scheduled)
        else:
            failures += 1

    scraper = asyncio.create_task(_scrapes(session, start, windows))
    await asyncio.gather(*(one(i) for i in range(count)))
    scrapes = await scraper
    return {
        "windows": windows,
        "failures": failures,
        "without_scraping": {"writes": len(latencies[False]), **_latencies(latencies[False])},
        "with_scraping": {"writes": len(latencies[True]), **_latencies(latencies[True])},
        "scrapes": len(scrapes),
        "scrape_ms_max": round(max((s for s, _ in scrapes), default=0.0) * 1000, 1),
        "scrape_bytes": scrapes[-1][1] if scrapes else 0,
    }


async def _load(endpoint: Endpoint, pid: int, seconds: float, scrape: bool) -> dict[str, Any]:
    session = await _session(endpoint)
    async with session:
        async with session.post("/api/v1/namespaces", json={"metadata": {"name": NAMESPACE}}):
            pass
        path = f"/api/v1/namespaces/{NAMESPACE}/configmaps"
        for index in range(POOL):
            async with session.post(path, json=_configmap(f"pool-{index}", "0")) as response:
                await response.read()
        # Warm-up: caches and connections settle.
        await _offered(session, "update", RATE, 5.0, "pool", POOL)
        if scrape:
            measured = await _alternating(session, seconds)
        else:
            measured = {"plain": await _offered(session, "update", RATE, seconds, "pool", POOL)}
        measured["rss_mb"] = _rss_mb(pid)
    return measured


def _load_process(endpoint: Endpoint, pid: int, seconds: float, scrape: bool) -> dict[str, Any]:
    return asyncio.run(_load(endpoint, pid, seconds, scrape))


def _serve_and_drive(root: Path, seconds: float, scrape: bool) -> dict[str, Any]:
    root.mkdir()
    server = Server(root, "normal")
    try:
        endpoint = server.start()
        time.sleep(3.0)  # start-up work settles (bootstrap, controllers' lists)
        rss_idle = server.rss_mb()
        assert server.process is not None
        context = multiprocessing.get_context("spawn")
        with context.Pool(1) as pool:
            measured: dict[str, Any] = pool.apply(
                _load_process, (endpoint, server.process.pid, seconds, scrape)
            )
    finally:
        server.stop()
    measured["rss_idle_mb"] = rss_idle
    return measured


def run(*, quick: bool = False, directory: Path | None = None) -> dict[str, Any]:
    """Measure what scraping /metrics costs the server; ``quick`` shortens the load."""
    seconds = 20.0 if quick else 80.0
    results: dict[str, Any] = {
        "benchmark": "metrics",
        "writes_per_s": RATE,
        "scrape_every_s": WINDOW,
        "seconds": seconds,
        "load_average_before": round(os.getloadavg()[0], 2),
    }
    with tempfile.TemporaryDirectory(prefix="k3py-metrics-bench-", dir=directory) as tmp:
        unscraped = _serve_and_drive(Path(tmp) / "unscraped", seconds, scrape=False)
        measured = _serve_and_drive(Path(tmp) / "scraped", seconds, scrape=True)
    results["rss_idle_mb"] = measured["rss_idle_mb"]
    results["unscraped_server"] = unscraped
    results.update(measured)
    results["load_average_after"] = round(os.getloadavg()[0], 2)
    plain, scraped = measured["without_scraping"], measured["with_scraping"]
    summary = {
        "write_p50_ms_without_scraping": plain["p50_ms"],
        "write_p50_ms_with_scraping": scraped["p50_ms"],
        "write_p99_ms_without_scraping": plain["p99_ms"],
        "write_p99_ms_with_scraping": scraped["p99_ms"],
        "write_p99_increase_percent": round((scraped["p99_ms"] / plain["p99_ms"] - 1) * 100, 1),
        "rss_mb_never_scraped": unscraped["rss_mb"],
        "rss_mb_scraped": measured["rss_mb"],
        "rss_increase_mb": round(measured["rss_mb"] - unscraped["rss_mb"], 1),
        "scrape_bytes": measured["scrape_bytes"],
        "scrape_ms_max": measured["scrape_ms_max"],
    }
    results["summary"] = summary
    results["budget"] = {
        name: {"budget": goal, "measured": summary[name], "met": summary[name] <= goal}
        for name, goal in GOALS.items()
    }
    return results


if __name__ == "__main__":
    main(
        run,
        __doc__,
        quick_help="a short load (smoke run)",
        dir_help="where to put the data dir (default: /tmp)",
    )
