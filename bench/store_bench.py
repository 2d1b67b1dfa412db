"""Datastore benchmark: write throughput and latency, and watch delivery latency, on SQLite.

``run()`` returns a dict for the benchmark runner; ``python -m bench.store_bench`` prints it as
JSON. Closed-loop runs keep N clients writing back to back (throughput at a concurrency);
offered-rate runs start writes on a fixed schedule whatever the latency (the architecture's
"API write p99 at 200 writes/s" budget). Every write is a create followed by updates of ~2 KB
JSON values, like pods. Watch delivery is measured from the start of a write to the moment
each watcher's iterator hands the event over.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

from bench.common import latency_ms, main
from k3py.cluster.server.store import Datastore, SQLiteDatastore

Sync = Literal["normal", "full"]
VALUE = json.dumps({"kind": "Pod", "spec": {"containers": [{"image": "x" * 1900}]}}).encode()


class Writes:
    """Alternates creates and updates over a pool of keys, timing each write."""

    def __init__(self, store: Datastore, prefix: str, keys: int = 500) -> None:
        self.store = store
        self.keys = [f"{prefix}{i:05}" for i in range(keys)]
        self.created: set[str] = set()
        self.next_key = itertools.cycle(self.keys)
        self.latencies: list[float] = []

    async def one(self) -> None:
        key = next(self.next_key)
        started = time.perf_counter()
        if key in self.created:
            await self.store.update(key, VALUE)
        else:
            self.created.add(key)
            await self.store.create(key, VALUE)
        self.latencies.append(time.perf_counter() - started)


async def _closed_loop(store: SQLiteDatastore, concurrency: int, seconds: float) -> dict[str, Any]:
    writes = Writes(store, f"/registry/pods/closed-{concurrency}/p")
    before = store.stats
    deadline = time.perf_counter() + seconds

    async def client(number: int) -> None:
        while time.perf_counter() < deadline:
            await writes.one()

    started = time.perf_counter()
    await asyncio.gather(*(client(n) for n in range(concurrency)))
    elapsed = time.perf_counter() - started
    after = store.stats
    return {
        "concurrency": concurrency,
        "writes": len(writes.latencies),
        "writes_per_s": round(len(writes.latencies) / elapsed),
        "transactions": after.transactions - before.transactions,
        **latency_ms(writes.latencies),
    }


async def offered_rate(
    store: Datastore, rate: int, seconds: float, phase: str = "rate"
) -> dict[str, Any]:
    """``rate`` writes a second for ``seconds``, each started on time whatever the others do."""
    writes = Writes(store, f"/registry/pods/{phase}-{rate}/p")
    interval = 1.0 / rate
    total = int(rate * seconds)
    started = time.perf_counter()
    tasks = []
    for n in range(total):
        delay = started + n * interval - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(writes.one()))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - started
    return {
        "offered_per_s": rate,
        "achieved_per_s": round(total / elapsed),
        **latency_ms(writes.latencies),
    }


async def paced_creates(
    store: Datastore, prefix: str, rate: int, total: int, sent: dict[str, float]
) -> None:
    """Create ``total`` keys under ``prefix``, ``rate`` a second; ``sent`` gets each one's time."""
    started = time.perf_counter()
    writes = []
    for n in range(total):
        delay = started + n / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        key = f"{prefix}c{n:06}"
        sent[key] = time.perf_counter()
        writes.append(asyncio.create_task(store.create(key, VALUE)))
    await asyncio.gather(*writes)


async def _watch_delivery(
    store: SQLiteDatastore, watchers: int, rate: int, seconds: float
) -> dict[str, Any]:
    sent: dict[str, float] = {}
    delays: list[float] = []
    total = int(rate * seconds)

    async def watcher() -> None:
        seen = 0
        async for batch in store.watch("/registry/configmaps/watch/", revision=0):
            now = time.perf_counter()
            delays.extend(now - sent[event.kv.key] for event in batch)
            seen += len(batch)
            if seen >= total:
                return

    tasks = [asyncio.create_task(watcher()) for _ in range(watchers)]
    await asyncio.sleep(0)
    await paced_creates(store, "/registry/configmaps/watch/", rate, total, sent)
    await asyncio.wait_for(asyncio.gather(*tasks), 30)
    return {"watchers": watchers, "offered_per_s": rate, **latency_ms(delays)}


async def _bench_sync(
    directory: Path, sync: Sync, concurrencies: list[int], rates: list[int], seconds: float
) -> dict[str, Any]:
    store = SQLiteDatastore(directory / f"bench-{sync}.db", sync=sync)
    await store.start()
    try:
        closed = [await _closed_loop(store, c, seconds) for c in concurrencies]
        offered = [await offered_rate(store, r, seconds) for r in rates]
        watch = await _watch_delivery(store, watchers=20, rate=200, seconds=seconds)
    finally:
        await store.close()
    return {"closed_loop": closed, "offered_rate": offered, "watch_delivery": watch}


def run(*, quick: bool = False, directory: Path | None = None) -> dict[str, Any]:
    """Measure the SQLite datastore; ``quick`` shortens every phase (for smoke runs)."""
    seconds = 0.5 if quick else 2.0
    concurrencies = [1, 10, 100]
    rates = [50, 200, 1000]
    with tempfile.TemporaryDirectory(prefix="k3py-store-bench-", dir=directory) as tmp:
        results: dict[str, Any] = {
            "benchmark": "store",
            "value_bytes": len(VALUE),
            "seconds_per_phase": seconds,
        }
        for sync in ("normal", "full"):
            results[f"sync_{sync}"] = asyncio.run(
                _bench_sync(Path(tmp), sync, concurrencies, rates, seconds)
            )
    normal = results["sync_normal"]
    results["summary"] = {
        "write_p99_ms_at_200_per_s_normal": next(
            r["p99_ms"] for r in normal["offered_rate"] if r["offered_per_s"] == 200
        ),
        "write_p99_ms_at_200_per_s_full": next(
            r["p99_ms"] for r in results["sync_full"]["offered_rate"] if r["offered_per_s"] == 200
        ),
        "max_writes_per_s_normal": max(r["writes_per_s"] for r in normal["closed_loop"]),
        "watch_delivery_p99_ms": normal["watch_delivery"]["p99_ms"],
    }
    return results


if __name__ == "__main__":
    main(run, __doc__, dir_help="where to put the database (default: /tmp)")
