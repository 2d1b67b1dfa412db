"""RBAC benchmark: API write latency with RBAC deciding each request, beside without it.

``run()`` starts ``k3py server`` (embedded SQLite, loopback, ``--datastore-sync normal``),
measures its idle RSS (with the default roles and the RBAC authorizer running), then offers
ConfigMap creates at 200 writes/s from a separate process, alternately as the admin (client
certificate in ``system:masters``: RBAC is not consulted, the figure without it) and as a
ServiceAccount whose bearer token from the TokenRequest API is verified on every request and
whose writes a Role and RoleBinding allow (the figure with RBAC). Phases interleave so that a
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


async def _load(endpoint: Endpoint, seconds: float, repeats: int) -> dict[str, Any]:
    token = await _prepare(endpoint)
    phases: dict[str, list[dict[str, Any]]] = {"without_rbac": [], "with_rbac": []}
    for repeat in range(repeats):
        for name, credential in (("without_rbac", None), ("with_rbac", token)):
            session = await _session(endpoint, credential)
            async with session:
                prefix = f"{name.replace('_', '-')}-{repeat}"
                phases[name].append(await _offered(session, "create", RATE, seconds, prefix, 0))
    return {name: _median_of(runs) for name, runs in phases.items()}


def _load_process(endpoint: Endpoint, seconds: float, repeats: int) -> dict[str, Any]:
    return asyncio.run(_load(endpoint, seconds, repeats))


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
                measured: dict[str, Any] = pool.apply(_load_process, (endpoint, seconds, repeats))
            results.update(measured)
            results["rss_after_load_mb"] = server.rss_mb()
        finally:
            server.stop()
    results["load_average_after"] = round(os.getloadavg()[0], 2)
    without = float(results["without_rbac"]["p99_ms"])
    with_rbac = float(results["with_rbac"]["p99_ms"])
    results["write_p99_ms_at_200_per_s_rbac"] = with_rbac
    results["write_p99_ms_at_200_per_s_without_rbac"] = without
    results["rbac_p99_ratio"] = round(with_rbac / without, 3) if without else None
    results["budgets"] = {
        **BUDGETS,
        "rbac_p99_ratio": RELATIVE_BUDGET,
    }
    results["within_budget"] = {
        "rss_idle_mb": results["rss_idle_mb"] <= BUDGETS["rss_idle_mb"],
        "write_p99_ms_at_200_per_s_rbac": with_rbac <= BUDGETS["write_p99_ms_at_200_per_s_rbac"],
        "rbac_p99_ratio": bool(without) and with_rbac / without <= RELATIVE_BUDGET,
    }
    return results


if __name__ == "__main__":
    main(run, __doc__)
