"""API server benchmark: idle RSS, write latency at fixed offered rates, watch delivery latency.

``run()`` starts ``k3py server`` (embedded SQLite, loopback, a kernel-chosen port) once with
``--datastore-sync normal`` and once with ``full``, and drives it from a separate process (an
aiohttp client with the admin certificate and 32 connections, so client and server do not share
an interpreter).
Offered-rate runs start requests on a fixed schedule whatever the latency, and measure each
request from its scheduled start (queueing included). Creates are ConfigMap POSTs of ~1 KB;
updates are unconditional PUTs of the same ConfigMaps. Watch delivery is measured from the
start of a create to the moment each of several watchers reads its ADDED event. Every phase
runs three times and the figures are the medians, so a busy neighbour on a shared machine spoils
one phase's tail rather than the result.
``python -m bench.server_bench`` prints the result as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.processes import server_argv, stop_process

RATES = (50, 200, 1000)
# Concurrent clients (connections), as a few dozen agents and controllers keep open.
CLIENTS = 32
NAMESPACE = "bench"
PAYLOAD = "x" * 1000
BUDGETS = {
    "rss_idle_mb": 60.0,
    "write_p99_ms_at_200_per_s": 50.0,
    "create_p99_ms_at_1000_per_s": 20.0,
    "watch_p99_ms": 20.0,
}


def _percentile(samples: list[float], fraction: float) -> float:
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))]


def _latencies(samples: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(_percentile(samples, 0.50) * 1000, 2),
        "p99_ms": round(_percentile(samples, 0.99) * 1000, 2),
        "max_ms": round(max(samples, default=float("nan")) * 1000, 2),
    }


@dataclass(frozen=True)
class Endpoint:
    """Where the server listens and the admin credential to reach it (picklable)."""

    url: str
    ca: str
    cert: str
    key: str


class Server:
    """One ``k3py server`` process on loopback."""

    def __init__(self, root: Path, sync: str) -> None:
        self.root = root
        self.sync = sync
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Endpoint:
        import yaml

        kubeconfig = self.root / "kubeconfig.yaml"
        argv = server_argv(
            self.root / "data", kubeconfig, 0, "--datastore-sync", self.sync, "--disable-agent"
        )
        log = (self.root / "server.log").open("ab")
        self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + 60
        while not kubeconfig.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"k3py server did not start; see {self.root / 'server.log'}")
            time.sleep(0.05)
        config = yaml.safe_load(kubeconfig.read_text())
        tls = self.root / "data" / "server" / "tls"
        return Endpoint(
            url=config["clusters"][0]["cluster"]["server"],
            ca=str(tls / "server-ca.crt"),
            cert=str(tls / "client-admin.crt"),
            key=str(tls / "client-admin.key"),
        )

    def rss_mb(self) -> float:
        assert self.process is not None
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
        return float("nan")

    def stop(self) -> None:
        stop_process(self.process, grace=20)


# The load generator: runs in its own process ---------------------------------------------


async def _session(endpoint: Endpoint) -> Any:
    import ssl

    import aiohttp

    context = ssl.create_default_context(cafile=endpoint.ca)
    context.load_cert_chain(endpoint.cert, endpoint.key)
    connector = aiohttp.TCPConnector(ssl=context, limit=CLIENTS)
    return aiohttp.ClientSession(
        endpoint.url, connector=connector, timeout=aiohttp.ClientTimeout(total=60)
    )


def _configmap(name: str, stamp: str) -> dict[str, Any]:
    return {"metadata": {"name": name}, "data": {"payload": PAYLOAD, "stamp": stamp}}


async def _offered(
    session: Any, verb: str, rate: int, seconds: float, prefix: str, pool: int
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    count = max(1, int(rate * seconds))
    path = f"/api/v1/namespaces/{NAMESPACE}/configmaps"
    latencies: list[float] = []
    failures: dict[str, int] = {}
    start = loop.time() + 0.1

    async def one(index: int) -> None:
        scheduled = start + index / rate
        await asyncio.sleep(max(0.0, scheduled - loop.time()))
        if verb == "create":
            request = session.post(path, json=_configmap(f"{prefix}-{index}", str(index)))
        else:
            name = f"{prefix}-{index % pool}"
            request = session.put(f"{path}/{name}", json=_configmap(name, str(index)))
        try:
            async with request as response:
                await response.read()
                status = response.status
        except Exception as err:  # counted, not fatal: the figure says how many failed
            failures[type(err).__name__] = failures.get(type(err).__name__, 0) + 1
            return
        if status in (200, 201):
            latencies.append(loop.time() - scheduled)
        else:
            failures[str(status)] = failures.get(str(status), 0) + 1

    await asyncio.gather(*(one(i) for i in range(count)))
    elapsed = loop.time() - start
    return {
        "verb": verb,
        "offered_per_s": rate,
        "completed": len(latencies),
        "achieved_per_s": round(len(latencies) / elapsed, 1),
        "failures": failures,
        **_latencies(latencies),
    }


async def _watch_delivery(
    session: Any, watchers: int, rate: int, seconds: float, tag: int = 0
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    path = f"/api/v1/namespaces/{NAMESPACE}/configmaps"
    async with session.get(path, params={"limit": "1"}) as response:
        revision = (await response.json())["metadata"]["resourceVersion"]
    sent: dict[str, float] = {}
    received: list[float] = []
    count = max(1, int(rate * seconds))
    ready = asyncio.Event()
    opened = 0

    async def watcher() -> None:
        nonlocal opened
        params = {"watch": "1", "resourceVersion": revision, "timeoutSeconds": "120"}
        async with session.get(path, params=params, timeout=None) as stream:
            opened += 1
            if opened == watchers:
                ready.set()
            seen = 0
            async for line in stream.content:
                event = json.loads(line)
                name = event["object"]["metadata"]["name"]
                if event["type"] == "ADDED" and name in sent:
                    received.append(loop.time() - sent[name])
                    seen += 1
                    if seen == count:
                        return

    tasks = [asyncio.create_task(watcher()) for _ in range(watchers)]
    await asyncio.wait_for(ready.wait(), 30)
    await asyncio.sleep(0.5)  # every watch is registered with the datastore
    start = loop.time()

    async def write(index: int) -> None:
        name = f"watched-{tag}-{index}"
        await asyncio.sleep(max(0.0, start + index / rate - loop.time()))
        sent[name] = loop.time()
        async with session.post(path, json=_configmap(name, str(index))) as response:
            await response.read()

    await asyncio.gather(*(write(i) for i in range(count)))
    try:
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
    except TimeoutError:
        for task in tasks:
            task.cancel()
    return {
        "watchers": watchers,
        "writes_per_s": rate,
        "events": len(received),
        "expected_events": watchers * count,
        **_latencies(received),
    }


def _median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One figure from repeated phases: the median of each latency, the sum of the counts.

    The machine may be shared; a neighbour's burst spoils one phase's tail, not the median.
    """
    merged = dict(runs[0])
    for key in ("p50_ms", "p99_ms", "max_ms"):
        merged[key] = sorted(r[key] for r in runs)[len(runs) // 2]
    merged["p99_ms_each"] = [r["p99_ms"] for r in runs]
    for key in ("completed", "events", "expected_events"):
        if key in merged:
            merged[key] = sum(r[key] for r in runs)
    if "achieved_per_s" in merged:
        merged["achieved_per_s"] = round(sum(r["achieved_per_s"] for r in runs) / len(runs), 1)
    failures: dict[str, int] = {}
    for run in runs:
        for name, count in run.get("failures", {}).items():
            failures[name] = failures.get(name, 0) + count
    if "failures" in merged:
        merged["failures"] = failures
    return merged


async def _load(endpoint: Endpoint, seconds: float, repeats: int) -> dict[str, Any]:
    session = await _session(endpoint)
    async with session:
        async with session.post("/api/v1/namespaces", json={"metadata": {"name": NAMESPACE}}):
            pass
        phases: dict[tuple[str, int], list[dict[str, Any]]] = {}
        watches = []
        for repeat in range(repeats):
            for rate in RATES:
                prefix = f"c{rate}-{repeat}"
                created = await _offered(session, "create", rate, seconds, prefix, 0)
                phases.setdefault(("create", rate), []).append(created)
                pool = max(1, int(rate * seconds))
                updated = await _offered(session, "update", rate, seconds, prefix, pool)
                phases.setdefault(("update", rate), []).append(updated)
            watches.append(
                await _watch_delivery(session, watchers=10, rate=200, seconds=seconds, tag=repeat)
            )
    runs = [_median_of(phases[(verb, rate)]) for rate in RATES for verb in ("create", "update")]
    return {"offered_rate": runs, "watch_delivery": _median_of(watches)}


def _load_process(endpoint: Endpoint, seconds: float, repeats: int) -> dict[str, Any]:
    return asyncio.run(_load(endpoint, seconds, repeats))


def _drive(endpoint: Endpoint, seconds: float, repeats: int) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        result: dict[str, Any] = pool.apply(_load_process, (endpoint, seconds, repeats))
    return result


# The runner's entry point ----------------------------------------------------------------


def run(*, quick: bool = False, directory: Path | None = None) -> dict[str, Any]:
    """Measure the API server; ``quick`` shortens every phase (for smoke runs)."""
    seconds = 1.0 if quick else 3.0
    repeats = 1 if quick else 3
    results: dict[str, Any] = {
        "benchmark": "server",
        "seconds_per_phase": seconds,
        "repeats": repeats,
        "clients": CLIENTS,
    }
    # Other work on the machine shows in the tails; the load average says how much there was.
    results["load_average_before"] = round(os.getloadavg()[0], 2)
    with tempfile.TemporaryDirectory(prefix="k3py-server-bench-", dir=directory) as tmp:
        for sync in ("normal", "full"):
            root = Path(tmp) / sync
            root.mkdir()
            server = Server(root, sync)
            try:
                endpoint = server.start()
                if sync == "normal":
                    time.sleep(3.0)  # let start-up work settle (bootstrap, controllers' lists)
                    results["rss_idle_mb"] = server.rss_mb()
                measured = _drive(endpoint, seconds, repeats)
                measured["rss_after_load_mb"] = server.rss_mb()
                results[f"sync_{sync}"] = measured
            finally:
                server.stop()

    results["load_average_after"] = round(os.getloadavg()[0], 2)

    def p99(sync: str, verb: str, rate: int) -> float:
        runs = results[f"sync_{sync}"]["offered_rate"]
        return float(
            next(r["p99_ms"] for r in runs if r["offered_per_s"] == rate and r["verb"] == verb)
        )

    def at_200(sync: str, verb: str) -> float:
        return p99(sync, verb, 200)

    write_p99 = max(at_200("normal", "create"), at_200("normal", "update"))
    watch_p99 = float(results["sync_normal"]["watch_delivery"]["p99_ms"])
    results["summary"] = {
        "rss_idle_mb": results["rss_idle_mb"],
        "write_p99_ms_at_200_per_s": write_p99,
        "write_p99_ms_at_200_per_s_full": max(at_200("full", "create"), at_200("full", "update")),
        "create_p99_ms_at_1000_per_s": p99("normal", "create", 1000),
        "watch_p99_ms": watch_p99,
    }
    figures = {
        "rss_idle_mb": results["rss_idle_mb"],
        "write_p99_ms_at_200_per_s": write_p99,
        "create_p99_ms_at_1000_per_s": p99("normal", "create", 1000),
        "watch_p99_ms": watch_p99,
    }
    results["budget"] = {
        name: {"budget": BUDGETS[name], "measured": value, "met": value <= BUDGETS[name]}
        for name, value in figures.items()
    }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="short phases (smoke run)")
    parser.add_argument("--dir", type=Path, help="where to put the data dirs (default: /tmp)")
    args = parser.parse_args()
    print(json.dumps(run(quick=args.quick, directory=args.dir), indent=2))


if __name__ == "__main__":
    main()
