"""RBAC benchmark: API write latency with RBAC deciding each request, beside without it.

``run()`` starts ``k3py server`` (embedded SQLite, loopback, ``--datastore-sync normal``),
measures its idle RSS (with the default roles and the RBAC authorizer running), and again once
it serves a CustomResourceDefinition with 20 objects and the benchmark's Role, then offers
ConfigMap creates at 200 writes/s from a separate process, alternately as the admin (client
certificate in ``system:masters``: RBAC is not consulted, the figure without it) and as a
ServiceAccount whose bearer token from the TokenRequest API is verified on every request and
whose writes a Role and RoleBinding allow (the figure with RBAC). Each credential keeps one
session whose connections are opened by an unmeasured warm-up; phases interleave so that a
neighbour's burst spoils both alike; each figure is the median of the repeats.

``python -m bench.rbac_bench`` prints the result as JSON.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import ssl
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import main
from bench.server_bench import CLIENTS, NAMESPACE, Endpoint, Server, _median_of, _offered
from tests.crd.manifests import namespaced_crd

RATE = 200
BUDGETS = {"rss_idle_mb": 60.0, "write_p99_ms_at_200_per_s_rbac": 50.0}
RELATIVE_BUDGET = 1.10  # with RBAC at most 10 % worse


def _admin_context(endpoint: Endpoint) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=endpoint.ca)
    context.load_cert_chain(endpoint.cert, endpoint.key)
    return context


async def _session(endpoint: Endpoint, token: str | None) -> Any:
    import aiohttp

    if token is None:
        context = _admin_context(endpoint)
        headers = {}
    else:
        context = ssl.create_default_context(cafile=endpoint.ca)
        headers = {"Authorization": f"Bearer {token}"}
    connector = aiohttp.TCPConnector(ssl=context, limit=CLIENTS)
    return aiohttp.ClientSession(
        endpoint.url,
        connector=connector,
        headers=headers,
        timeout=aiohttp.ClientTimeout(total=60),
    )


async def _prepare(endpoint: Endpoint) -> str:
    """The namespace, an account allowed to write ConfigMaps there, and its token."""
    session = await _session(endpoint, None)
    rbac = "/apis/rbac.authorization.k8s.io/v1"
    async with session:
        bodies: list[tuple[str, dict[str, Any]]] = [
            ("/api/v1/namespaces", {"metadata": {"name": NAMESPACE}}),
            (f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts", {"metadata": {"name": "writer"}}),
            (
                f"{rbac}/namespaces/{NAMESPACE}/roles",
                {
                    "metadata": {"name": "writer"},
                    "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["*"]}],
                },
            ),
            (
                f"{rbac}/namespaces/{NAMESPACE}/rolebindings",
                {
                    "metadata": {"name": "writer"},
                    "roleRef": {
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": "Role",
                        "name": "writer",
                    },
                    "subjects": [
                        {"kind": "ServiceAccount", "name": "writer", "namespace": NAMESPACE}
                    ],
                },
            ),
        ]
        for path, body in bodies:
            async with session.post(path, json=body) as response:
                if response.status not in (200, 201, 409):
                    raise RuntimeError(f"{path}: {response.status} {await response.text()}")
        token_path = f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts/writer/token"
        async with session.post(token_path, json={"spec": {}}) as response:
            answer = await response.json()
    return str(answer["status"]["token"])


CRD = namespaced_crd("bench.k3py.io", "Gadget", {"size": {"type": "integer"}})


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


async def _with_crd(endpoint: Endpoint, pid: int) -> float:
    """The server's idle RSS once it serves a CRD with a few objects (beside RBAC's)."""
    session = await _session(endpoint, None)
    objects = f"/apis/bench.k3py.io/v1/namespaces/{NAMESPACE}/gadgets"
    async with session:
        async with session.post(
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", json=CRD
        ):
            pass
        for _ in range(100):  # until the CRD is established and its objects are served
            async with session.get(objects) as response:
                if response.status == 200:
                    break
            await asyncio.sleep(0.1)
        for index in range(20):
            gadget = {
                "apiVersion": "bench.k3py.io/v1",
                "kind": "Gadget",
                "metadata": {"name": f"gadget-{index}"},
                "spec": {"size": index},
            }
            async with session.post(objects, json=gadget) as response:
                if response.status not in (200, 201):
                    raise RuntimeError(f"{objects}: {response.status} {await response.text()}")
    await asyncio.sleep(3.0)  # idle again
    return _rss_mb(pid)


def _cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _load(endpoint: Endpoint, pid: int, seconds: float, repeats: int) -> dict[str, Any]:
    token = await _prepare(endpoint)
    rss_with_crd = await _with_crd(endpoint, pid)
    sessions = {
        "without_rbac": await _session(endpoint, None),
        "with_rbac": await _session(endpoint, token),
    }
    phases: dict[str, list[dict[str, Any]]] = {name: [] for name in sessions}
    cpu: dict[str, list[float]] = {name: [] for name in sessions}
    try:
        # Connections are opened before measuring, as server_bench's one session has them: a
        # fresh session's tail is TLS handshakes (client-certificate ones the costlier), which
        # would be compared instead of the authorization of each request.
        for name, session in sessions.items():
            await _offered(session, "create", RATE, 1.0, f"warm-{name.replace('_', '-')}", 0)
        for repeat in range(repeats):
            for name, session in sessions.items():
                prefix = f"{name.replace('_', '-')}-{repeat}"
                before = _cpu_seconds(pid)
                phase = await _offered(session, "create", RATE, seconds, prefix, 0)
                used = _cpu_seconds(pid) - before
                phases[name].append(phase)
                cpu[name].append(1000 * used / max(1, int(phase["completed"])))
    finally:
        for session in sessions.values():
            await session.close()
    results: dict[str, Any] = {name: _median_of(runs) for name, runs in phases.items()}
    results["rss_idle_with_crd_mb"] = rss_with_crd
    for name, each in cpu.items():
        # The server's CPU per write: what RBAC costs, less disturbed by neighbours than a p99.
        results[f"server_cpu_ms_per_write_{name}"] = round(sorted(each)[len(each) // 2], 3)
    return results


def _load_process(endpoint: Endpoint, pid: int, seconds: float, repeats: int) -> dict[str, Any]:
    return asyncio.run(_load(endpoint, pid, seconds, repeats))


def run(*, quick: bool = False, directory: Path | None = None) -> dict[str, Any]:
    seconds = 1.0 if quick else 3.0
    repeats = 1 if quick else 5
    results: dict[str, Any] = {
        "benchmark": "rbac",
        "offered_per_s": RATE,
        "seconds_per_phase": seconds,
        "repeats": repeats,
        "load_average_before": round(os.getloadavg()[0], 2),
    }
    with tempfile.TemporaryDirectory(prefix="k3py-rbac-bench-", dir=directory) as tmp:
        server = Server(Path(tmp), "normal")
        try:
            endpoint = server.start()
            time.sleep(3.0)  # let start-up work settle (bootstrap, controllers' lists)
            results["rss_idle_mb"] = server.rss_mb()
            context = multiprocessing.get_context("spawn")
            with context.Pool(1) as pool:
                assert server.process is not None
                load = (endpoint, server.process.pid, seconds, repeats)
                measured: dict[str, Any] = pool.apply(_load_process, load)
            results.update(measured)
            results["rss_after_load_mb"] = server.rss_mb()
        finally:
            server.stop()
    results["load_average_after"] = round(os.getloadavg()[0], 2)
    without = float(results["without_rbac"]["p99_ms"])
    with_rbac = float(results["with_rbac"]["p99_ms"])
    results["write_p99_ms_at_200_per_s_rbac"] = with_rbac
    results["write_p99_ms_at_200_per_s_without_rbac"] = without
    ratio = round(with_rbac / without, 3) if without else None
    results["rbac_p99_ratio"] = ratio
    results["budget"] = {  # the README table's budget and met columns (bench/__main__.py)
        key: {"budget": limit, "met": value is not None and value <= limit}
        for key, limit, value in (
            ("rss_idle_mb", BUDGETS["rss_idle_mb"], results["rss_idle_mb"]),
            ("rss_idle_with_crd_mb", BUDGETS["rss_idle_mb"], results["rss_idle_with_crd_mb"]),
            (
                "write_p99_ms_at_200_per_s_rbac",
                BUDGETS["write_p99_ms_at_200_per_s_rbac"],
                with_rbac,
            ),
            ("rbac_p99_ratio", RELATIVE_BUDGET, ratio),
        )
    }
    return results


if __name__ == "__main__":
    main(run, __doc__)
