"""CRD benchmark: the server's idle RSS with RBAC and custom resources, and how soon a new CRD
is served.

``run()`` starts ``k3py server`` (embedded SQLite, loopback, no agent; the RBAC authorizer and
the default roles are always on), measures its idle RSS, then creates ``CRDS``
CustomResourceDefinitions (a namespaced and a cluster-scoped kind each time, two served
versions, status and scale subresources, printer columns, a schema of a dozen fields) and
times each from its create to the first custom object accepted; it then creates ``OBJECTS``
custom objects, reads what kubectl reads (discovery, the OpenAPI v3 documents of every group,
the v2 document) so that the documents built from the schemas are held, lets the server settle
and measures the idle RSS again. Budget (issue 16): idle RSS with RBAC and CRDs ≤ 60 MB.

``python -m bench.crd_bench`` prints the result as JSON.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import latency_ms, main
from bench.server_bench import Endpoint, Server

BUDGETS = {"rss_idle_with_crds_mb": 60.0}
CRDS = 10
OBJECTS = 200


def _schema() -> dict[str, Any]:
    fields = {f"field{i}": {"type": "string", "maxLength": 63} for i in range(8)}
    return {
        "type": "object",
        "properties": {
            "spec": {
                "type": "object",
                "required": ["size"],
                "properties": {
                    "size": {"type": "string", "enum": ["small", "large"]},
                    "replicas": {"type": "integer", "minimum": 0, "default": 1},
                    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                    **fields,
                },
            },
            "status": {
                "type": "object",
                "properties": {"replicas": {"type": "integer"}, "phase": {"type": "string"}},
            },
        },
    }


def crd(index: int, scope: str) -> dict[str, Any]:
    """The ``index``-th benchmark CRD, Namespaced or Cluster."""
    plural = f"things{index}{scope[0].lower()}"
    version = {
        "served": True,
        "schema": {"openAPIV3Schema": _schema()},
        "subresources": {
            "status": {},
            "scale": {
                "specReplicasPath": ".spec.replicas",
                "statusReplicasPath": ".status.replicas",
            },
        },
        "additionalPrinterColumns": [
            {"name": "Size", "type": "string", "jsonPath": ".spec.size"},
            {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        ],
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.bench.k3py.io"},
        "spec": {
            "group": "bench.k3py.io",
            "scope": scope,
            "names": {"plural": plural, "kind": f"Thing{index}{scope}"},
            "versions": [
                {**version, "name": "v1", "storage": True},
                {**version, "name": "v1beta1", "storage": False},
            ],
        },
    }


def _collection(body: dict[str, Any]) -> str:
    plural = body["spec"]["names"]["plural"]
    if body["spec"]["scope"] == "Namespaced":
        return f"/apis/bench.k3py.io/v1/namespaces/default/{plural}"
    return f"/apis/bench.k3py.io/v1/{plural}"


async def _load(endpoint: Endpoint, server: Server, settle: float) -> dict[str, Any]:
    import aiohttp

    context = ssl.create_default_context(cafile=endpoint.ca)
    context.load_cert_chain(endpoint.cert, endpoint.key)
    async with aiohttp.ClientSession(
        endpoint.url, connector=aiohttp.TCPConnector(ssl=context)
    ) as session:
        served: list[float] = []
        bodies = [crd(i, scope) for i in range(CRDS // 2) for scope in ("Namespaced", "Cluster")]
        for body in bodies:
            started = time.monotonic()
            async with session.post(
                "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", json=body
            ) as response:
                if response.status != 201:
                    raise RuntimeError(f"CRD create: {response.status} {await response.text()}")
            kind = body["spec"]["names"]["kind"]
            while True:  # until the first object of the new kind is accepted
                thing = {
                    "apiVersion": "bench.k3py.io/v1",
                    "kind": kind,
                    "metadata": {"name": "first"},
                    "spec": {"size": "small"},
                }
                async with session.post(_collection(body), json=thing) as response:
                    if response.status == 201:
                        break
                    if response.status != 404:
                        raise RuntimeError(f"create: {response.status} {await response.text()}")
                await asyncio.sleep(0.005)
            served.append(time.monotonic() - started)
        for index in range(OBJECTS):
            body = bodies[index % len(bodies)]
            thing = {
                "apiVersion": "bench.k3py.io/v1",
                "kind": body["spec"]["names"]["kind"],
                "metadata": {"name": f"thing-{index}", "labels": {"bench": "crd"}},
                "spec": {"size": "large", **{f"field{i}": f"value-{i}" for i in range(8)}},
            }
            async with session.post(_collection(body), json=thing) as response:
                if response.status != 201:
                    raise RuntimeError(f"create: {response.status} {await response.text()}")
        await asyncio.sleep(settle)
        rss_before_reads = server.rss_mb()
        # What kubectl reads: discovery, every v3 document, and the v2 document.
        async with session.get("/apis") as response:
            await response.read()
        async with session.get("/openapi/v3") as response:
            documents = await response.json()
        for entry in documents["paths"].values():
            async with session.get(entry["serverRelativeURL"]) as response:
                await response.read()
        async with session.get("/openapi/v2", headers={"Accept": "application/json"}) as response:
            await response.read()
    return {
        "crd_create_to_served_ms": latency_ms(served, 1),
        "rss_with_crds_before_openapi_reads_mb": rss_before_reads,
    }


def run(*, quick: bool = False, directory: Path | None = None) -> dict[str, Any]:
    results: dict[str, Any] = {
        "benchmark": "crd",
        "crds": CRDS,
        "custom_objects": OBJECTS,
        "load_average_before": round(os.getloadavg()[0], 2),
    }
    settle = 2.0 if quick else 5.0
    with tempfile.TemporaryDirectory(prefix="k3py-crd-bench-", dir=directory) as tmp:
        server = Server(Path(tmp), "normal")
        try:
            endpoint = server.start()
            time.sleep(settle)  # start-up work settles (bootstrap, controllers' lists)
            results["rss_idle_mb"] = server.rss_mb()
            results.update(asyncio.run(_load(endpoint, server, settle)))
            time.sleep(settle)
            results["rss_idle_with_crds_mb"] = server.rss_mb()
        finally:
            server.stop()
    results["load_average_after"] = round(os.getloadavg()[0], 2)
    results["budget"] = {  # the README table's budget and met columns (bench/__main__.py)
        key: {"budget": limit, "met": results[key] <= limit} for key, limit in BUDGETS.items()
    }
    return results


if __name__ == "__main__":
    main(run, __doc__)
