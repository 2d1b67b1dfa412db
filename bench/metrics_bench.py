"""Cost of the metrics: server RSS and API write p99 without and with a scrape every 5 s.

``run()`` starts one ``k3py server`` (embedded SQLite, loopback) and drives it from a separate
process at 200 writes/s (unconditional PUTs of a fixed pool of ~1 KB ConfigMaps, so the store
does not grow between phases). Phases alternate within the same run: one without scraping, one
with a ``GET /metrics`` every 5 s (the first at the phase's start), repeated; each phase ends
with the server's RSS. The figures are the medians over the repeats, and the cost is the
difference between the two kinds of phase (goal: at most 3 MB and 5 % more p99).
``python -m bench.metrics_bench`` prints the result as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.server_bench import NAMESPACE, Endpoint, Server, _configmap, _offered, _session

RATE = 200
POOL = 200
SCRAPE_EVERY = 5.0
GOALS = {"rss_increase_mb": 3.0, "write_p99_increase_percent": 5.0}


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


async def _scraper(session: Any, stop: asyncio.Event, found: list[tuple[float, int]]) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        started = loop.time()
        async with session.get("/metrics") as response:
            body = await response.read()
            if response.status != 200:
                raise RuntimeError(f"/metrics answered {response.status}")
        found.append((loop.time() - started, len(body)))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), SCRAPE_EVERY)


async def _phase(session: Any, seconds: float, scraping: bool, tag: str) -> dict[str, Any]:
    scrapes: list[tuple[float, int]] = []
    stop = asyncio.Event()
    scraper = asyncio.create_task(_scraper(session, stop, scrapes)) if scraping else None
    try:
        result = await _offered(session, "update", RATE, seconds, "pool", POOL)
    finally:
        stop.set()
        if scraper is not None:
            await scraper
    result["scraping"] = scraping
    result["tag"] = tag
    if scrapes:
        result["scrapes"] = len(scrapes)
        result["scrape_ms_max"] = round(max(s for s, _ in scrapes) * 1000, 1)
        result["scrape_bytes"] = scrapes[-1][1]
    return result


async def _load(endpoint: Endpoint, pid: int, seconds: float, repeats: int) -> dict[str, Any]:
    session = await _session(endpoint)
    phases: list[dict[str, Any]] = []
    async with session:
        async with session.post("/api/v1/namespaces", json={"metadata": {"name": NAMESPACE}}):
            pass
        path = f"/api/v1/namespaces/{NAMESPACE}/configmaps"
        for index in range(POOL):
            async with session.post(path, json=_configmap(f"pool-{index}", "0")) as response:
                await response.read()
        # Warm-up: the first writes pay for caches and connections.
        await _offered(session, "update", RATE, 2.0, "pool", POOL)
        for repeat in range(repeats):
            for scraping in (False, True):
                phase = await _phase(session, seconds, scraping, f"{repeat}")
                phase["rss_mb"] = _rss_mb(pid)
                phases.append(phase)
    return {"phases": phases}


def _load_process(endpoint: Endpoint, pid: int, seconds: float, repeats: int) -> dict[str, Any]:
    return asyncio.run(_load(endpoint, pid, seconds, repeats))


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def run(*, quick: bool = False, directory: Path | None = None) -> dict[str, Any]:
    """Measure what scraping /metrics costs the server; ``quick`` shortens the phases."""
    # Short phases, many of them: a neighbour's burst on a shared machine then spoils a few
    # phases of both kinds instead of one long phase of one kind.
    seconds = 5.0
    repeats = 1 if quick else 6
    results: dict[str, Any] = {
        "benchmark": "metrics",
        "writes_per_s": RATE,
        "scrape_every_s": SCRAPE_EVERY,
        "seconds_per_phase": seconds,
        "repeats": repeats,
        "load_average_before": round(os.getloadavg()[0], 2),
    }
    with tempfile.TemporaryDirectory(prefix="k3py-metrics-bench-", dir=directory) as tmp:
        server = Server(Path(tmp), "normal")
        try:
            endpoint = server.start()
            time.sleep(3.0)  # start-up work settles (bootstrap, controllers' lists)
            results["rss_idle_mb"] = server.rss_mb()
            assert server.process is not None
            context = multiprocessing.get_context("spawn")
            with context.Pool(1) as pool:
                measured: dict[str, Any] = pool.apply(
                    _load_process, (endpoint, server.process.pid, seconds, repeats)
                )
        finally:
            server.stop()
    phases = measured["phases"]
    results["phases"] = phases
    results["load_average_after"] = round(os.getloadavg()[0], 2)
    plain = [p for p in phases if not p["scraping"]]
    scraped = [p for p in phases if p["scraping"]]
    p99_plain = _median([p["p99_ms"] for p in plain])
    p99_scraped = _median([p["p99_ms"] for p in scraped])
    # Each scraping phase against the plain phase just before it: RSS drifts up over a run.
    rss_increase = _median([s["rss_mb"] - p["rss_mb"] for p, s in zip(plain, scraped, strict=True)])
    summary = {
        "write_p50_ms_without_scraping": _median([p["p50_ms"] for p in plain]),
        "write_p50_ms_with_scraping": _median([p["p50_ms"] for p in scraped]),
        "write_p99_ms_without_scraping": p99_plain,
        "write_p99_ms_with_scraping": p99_scraped,
        "write_p99_increase_percent": round((p99_scraped / p99_plain - 1) * 100, 1),
        "rss_mb_without_scraping": _median([p["rss_mb"] for p in plain]),
        "rss_mb_with_scraping": _median([p["rss_mb"] for p in scraped]),
        "rss_increase_mb": round(rss_increase, 1),
        "scrape_bytes": scraped[-1].get("scrape_bytes", 0),
        "scrape_ms_max": max(p.get("scrape_ms_max", 0.0) for p in scraped),
    }
    results["summary"] = summary
    results["budget"] = {
        name: {"budget": goal, "measured": summary[name], "met": summary[name] <= goal}
        for name, goal in GOALS.items()
    }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="short phases (smoke run)")
    parser.add_argument("--dir", type=Path, help="where to put the data dir (default: /tmp)")
    args = parser.parse_args()
    print(json.dumps(run(quick=args.quick, directory=args.dir), indent=2))


if __name__ == "__main__":
    main()
