"""High availability benchmark: SQLite beside PostgreSQL, watches across servers, failover.

In one run, on a throw-away PostgreSQL (``fsync`` on, as in production) started like the tests'
(:mod:`tests.store.pg_instance`):

* **datastore** — write latency at offered rates of 200 and 1,000 writes/s (writes started on a
  schedule whatever the latency; ~2 KB values, creates then updates) and watch delivery from a
  write's start to a watcher's iterator, for the embedded SQLite datastore and for PostgreSQL;
  on PostgreSQL also across servers (two datastores on one database, the write on one, the
  watch on the other: LISTEN/NOTIFY, then a read of the new rows);
* **failover** — two ``k3py server`` processes on one database: ``kill -9`` of the leader until
  the other holds the control-plane Lease; and an agent's view: calls through the agent's load
  balancer every 20 ms, ``kill -9`` of the server it uses, until its next successful call;
* **hollow nodes** — 1,000 hollow nodes registered through the second server while the first
  leads, pods created through the second and scheduled by the first.

``python -m bench.ha_bench`` prints the result as JSON.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench.common import latency_ms, main
from bench.store_bench import offered_rate, paced_creates
from k3py.cluster.agent.loadbalancer import ServerLoadBalancer
from k3py.cluster.api.resources import by_kind
from k3py.cluster.client import KubeClient
from k3py.cluster.client.kubeconfig import read_kubeconfig
from k3py.cluster.server.store import Datastore, SQLiteDatastore
from k3py.cluster.server.store.postgres import PostgresDatastore
from tests.controllers.hollow import HollowNodes
from tests.controllers.serverproc import ServerProcess
from tests.store.pg_instance import PostgresInstance

TOKEN = "bench-ha-secret"
WATCH_BUDGET_MS = 20.0
LEASES = by_kind("coordination.k8s.io/v1", "Lease")
PODS = by_kind("v1", "Pod")
NAMESPACES = by_kind("v1", "Namespace")


async def _watch_delivery(
    writer: Datastore, watcher: Datastore, rate: int, seconds: float, prefix: str
) -> dict[str, Any]:
    sent: dict[str, float] = {}
    delays: list[float] = []
    total = int(rate * seconds)
    watch = watcher.watch(prefix, revision=0)

    async def consume() -> None:
        async for batch in watch:
            now = time.perf_counter()
            delays.extend(now - sent[e.kv.key] for e in batch if e.kv.key in sent)
            if len(delays) >= total:
                return

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.05)
    await paced_creates(writer, prefix, rate, total, sent)
    await asyncio.wait_for(task, 30)
    watch.close()
    return {"offered_per_s": rate, **latency_ms(delays)}


async def _datastore(
    open_store: Callable[[], Datastore], seconds: float, *, across: bool
) -> dict[str, Any]:
    store = open_store()
    other = open_store() if across else None
    await store.start()
    if other is not None:
        await other.start()
    try:
        # Warm up (connections, plans, caches) so the first measured phase is not the cold one.
        await offered_rate(store, 200, 0.5, phase="warm-up")
        result: dict[str, Any] = {
            "offered_rate": [await offered_rate(store, r, seconds) for r in (200, 1000)],
            "watch_within_server": await _watch_delivery(
                store, store, 200, seconds, "/registry/configmaps/within/"
            ),
        }
        if other is not None:
            result["watch_across_servers"] = await _watch_delivery(
                store, other, 200, seconds, "/registry/configmaps/across/"
            )
    finally:
        if other is not None:
            await other.close()
        await store.close()
    return result


async def _wait_for(check: Callable[[], Awaitable[bool]], seconds: float, what: str) -> float:
    deadline = time.perf_counter() + seconds
    while not await check():
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{what} did not happen within {seconds:.0f} s")
        await asyncio.sleep(0.05)
    return time.perf_counter()


async def _holder(client: KubeClient) -> str:
    assert LEASES is not None
    try:
        lease = await client.get(LEASES, "k3py-control-plane", "kube-system")
    except Exception:
        return ""
    return str((lease.get("spec") or {}).get("holderIdentity") or "")


async def _servers(root: Path, endpoint: str) -> list[ServerProcess]:
    servers = []
    for i in range(2):
        workdir = root / f"server{i}"
        workdir.mkdir()
        server = ServerProcess(
            workdir, "--disable-agent", "--datastore-endpoint", endpoint, "--token", TOKEN
        )
        await server.start()
        servers.append(server)
        if i == 0:  # the first leads: the others join a running control plane
            client = KubeClient.from_kubeconfig(server.kubeconfig)
            try:
                await _wait_for(_has_holder(client), 30, "a leader")
            finally:
                await client.close()
    return servers


def _has_holder(client: KubeClient) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return bool(await _holder(client))

    return check


def _pid_of(holder: str) -> int:
    return int(holder.rsplit("_", 1)[1]) if "_" in holder else 0


async def _failover(root: Path, endpoint: str) -> dict[str, Any]:
    servers = await _servers(root, endpoint)
    first, second = servers
    watcher = KubeClient.from_kubeconfig(second.kubeconfig)
    balancer = ServerLoadBalancer(first.url)
    await balancer.start()
    # The admin's credentials, through the load balancer's loopback port (as an agent's are).
    creds = read_kubeconfig(first.kubeconfig)
    through = KubeClient(balancer.url, ssl_context=creds.ssl_context, token=creds.token)
    result: dict[str, Any] = {}
    try:
        assert NAMESPACES is not None
        balancer.set_servers([f"127.0.0.1:{s.port}" for s in servers])
        await through.get(NAMESPACES, "default")
        assert first.process is not None
        assert _pid_of(await _holder(watcher)) == first.process.pid
        killed = time.perf_counter()
        first.process.kill()
        # The agent's view: its next successful call through the load balancer.
        while True:
            try:
                await through.get(NAMESPACES, "default")
                break
            except Exception:
                await asyncio.sleep(0.02)
        result["agent_next_call_s"] = round(time.perf_counter() - killed, 3)
        assert second.process is not None
        pid = second.process.pid
        moved = await _wait_for(
            lambda: _holder_is(watcher, pid), 60, "the controllers moving to the other server"
        )
        result["controllers_moved_s"] = round(moved - killed, 2)
    finally:
        await through.close()
        await watcher.close()
        await balancer.stop()
        for server in servers:
            await server.stop()
    return result


async def _holder_is(client: KubeClient, pid: int) -> bool:
    return _pid_of(await _holder(client)) == pid


async def _hollow(root: Path, endpoint: str, nodes: int, pods: int) -> dict[str, Any]:
    servers = await _servers(root, endpoint)
    client = KubeClient.from_kubeconfig(servers[1].kubeconfig)
    hollow = HollowNodes(client, renew_interval=10.0, concurrency=64)
    result: dict[str, Any] = {"nodes": nodes, "pods": pods}
    try:
        await hollow.start(kubelets=16)
        started = time.perf_counter()
        await hollow.add([f"hollow-{i:04d}" for i in range(nodes)])
        result["register_nodes_s"] = round(time.perf_counter() - started, 2)
        gate = asyncio.Semaphore(64)
        assert PODS is not None

        async def create(i: int) -> None:
            pod = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": f"bench-{i}", "namespace": "default"},
                "spec": {"containers": [{"name": "c", "image": "registry.example/app:1"}]},
            }
            async with gate:
                await client.create(PODS, pod, "default")

        started = time.perf_counter()
        await asyncio.gather(*(create(i) for i in range(pods)))

        async def all_bound() -> bool:
            bench = [p for p in hollow.pods.list("default") if p["spec"].get("nodeName")]
            return len(bench) >= pods

        bound = await _wait_for(all_bound, 600, "all pods bound")
        result["scheduled_pods_per_s"] = round(pods / (bound - started), 1)
    finally:
        await hollow.stop()
        await client.close()
        for server in servers:
            await server.stop()
    return result


def run(*, quick: bool = False, directory: Path | None = None) -> dict[str, Any]:
    seconds = 1.0 if quick else 3.0
    nodes, pods = (200, 400) if quick else (1000, 2000)
    results: dict[str, Any] = {"benchmark": "ha", "seconds_per_phase": seconds}
    postgres = PostgresInstance(fsync=True)
    postgres.start()
    try:
        with tempfile.TemporaryDirectory(prefix="k3py-ha-bench-", dir=directory) as tmp:
            root = Path(tmp)
            results["sqlite"] = asyncio.run(
                _datastore(lambda: SQLiteDatastore(root / "bench.db"), seconds, across=False)
            )
            endpoint = postgres.new_database()
            results["postgres"] = asyncio.run(
                _datastore(lambda: PostgresDatastore(endpoint), seconds, across=True)
            )
            (root / "failover").mkdir()
            results["failover"] = asyncio.run(_failover(root / "failover", postgres.new_database()))
            (root / "hollow").mkdir()
            results["hollow_two_servers"] = asyncio.run(
                _hollow(root / "hollow", postgres.new_database(), nodes, pods)
            )
    finally:
        postgres.stop()
    sqlite, pg = results["sqlite"], results["postgres"]

    def p99(backend: dict[str, Any], rate: int) -> float:
        return float(
            next(r["p99_ms"] for r in backend["offered_rate"] if r["offered_per_s"] == rate)
        )

    results["summary"] = {
        "sqlite_write_p99_ms_at_200_per_s": p99(sqlite, 200),
        "postgres_write_p99_ms_at_200_per_s": p99(pg, 200),
        "sqlite_write_p99_ms_at_1000_per_s": p99(sqlite, 1000),
        "postgres_write_p99_ms_at_1000_per_s": p99(pg, 1000),
        "sqlite_watch_p99_ms": sqlite["watch_within_server"]["p99_ms"],
        "postgres_watch_p99_ms_within_server": pg["watch_within_server"]["p99_ms"],
        "postgres_watch_p99_ms_across_servers": pg["watch_across_servers"]["p99_ms"],
        "leader_killed_to_controllers_moved_s": results["failover"]["controllers_moved_s"],
        "agent_server_killed_to_next_call_s": results["failover"]["agent_next_call_s"],
        "hollow_nodes_two_servers_pods_per_s": results["hollow_two_servers"][
            "scheduled_pods_per_s"
        ],
    }
    results["budget"] = {
        "postgres_watch_p99_ms_across_servers": {
            "budget": WATCH_BUDGET_MS,
            "met": pg["watch_across_servers"]["p99_ms"] <= WATCH_BUDGET_MS,
        },
        "postgres_write_p99_ms_at_200_per_s": {
            "budget": 50.0,
            "met": p99(pg, 200) <= 50.0,
        },
    }
    return results


if __name__ == "__main__":
    main(run, __doc__, dir_help="where to put data (default /tmp)")
