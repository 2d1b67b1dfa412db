"""Pod termination on the real Docker engine: many pods that ignore SIGTERM, deleted at once.

A ``k3py server`` and one ``k3py agent`` run as in :mod:`bench.agent_bench`. 50 pods whose
process ignores SIGTERM (so each stop lasts its whole grace period) run on the node; all are
deleted together, and half a second later a new pod is created. Measured: the seconds from
the deletions until the last of the 50 is gone from the API (budget: one grace period plus
5 s, as the kubelet stops every container at once), and the seconds from the new pod's
creation to Running while the others stop (budget: 2 s). ``python -m bench.termination_bench``
prints the result as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import time
from typing import Any

from bench.agent_bench import IMAGE, PODS, Bench, _start_pods, _wait_node_ready, run_on_docker
from k3py.cluster.client import KubeClient

STUBBORN = ["sh", "-c", "trap '' TERM; while true; do sleep 1; done"]


class TerminationBench(Bench):
    """The agent benchmark's processes, the agent leaving the host's network alone (it runs
    in the machine's own namespace)."""

    def _spawn(self, argv: list[str], *, log: str) -> subprocess.Popen[bytes]:
        if log == "agent.log":
            argv = [*argv, "--flannel-backend", "none"]
        return super()._spawn(argv, log=log)


def _stubborn_pod(name: str, node: str, grace: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "nodeName": node,
            "terminationGracePeriodSeconds": grace,
            "containers": [{"name": "main", "image": IMAGE, "command": STUBBORN}],
        },
    }


async def _running(client: KubeClient, names: list[str], seconds: float) -> None:
    assert PODS is not None
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        items, _ = await client.list(PODS, "default")
        phases = {i["metadata"]["name"]: (i.get("status") or {}).get("phase") for i in items}
        if all(phases.get(n) == "Running" for n in names):
            return
        await asyncio.sleep(0.5)
    raise RuntimeError("the stubborn pods did not all start")


async def _gone(client: KubeClient, names: set[str], since: float, seconds: float) -> float:
    """Seconds from ``since`` until none of ``names`` is left (inf after ``seconds``)."""
    assert PODS is not None
    while time.perf_counter() - since < seconds:
        items, _ = await client.list(PODS, "default")
        if not any(i["metadata"]["name"] in names for i in items):
            return time.perf_counter() - since
        await asyncio.sleep(0.1)
    return float("inf")


async def _measure(bench: Bench, pods: int, grace: int) -> dict[str, Any]:
    assert PODS is not None
    client = KubeClient.from_kubeconfig(bench.kubeconfig)
    try:
        await _wait_node_ready(client, bench.node, 60)
        names = [f"stubborn-{i:02}" for i in range(pods)]
        for name in names:
            await client.create(PODS, _stubborn_pod(name, bench.node, grace), "default")
        await _running(client, names, 300)
        await asyncio.sleep(2)
        started = time.perf_counter()
        await asyncio.gather(*(client.delete(PODS, n, "default") for n in names))
        gone = asyncio.create_task(_gone(client, set(names), started, grace + 120))
        await asyncio.sleep(0.5)
        fresh = await _start_pods(client, bench.node, ["fresh"])
        deleted_after = await gone
    finally:
        await client.close()
    summary = {
        "pods_deleted": pods,
        "grace_period_s": grace,
        "delete_all_s": round(deleted_after, 2),
        "new_pod_running_during_delete_s": round(fresh.get("fresh", float("nan")), 3),
    }
    return {
        "summary": summary,
        "budget": {
            "delete_all_s": {"budget": grace + 5, "met": deleted_after <= grace + 5},
            "new_pod_running_during_delete_s": {
                "budget": 2.0,
                "met": summary["new_pod_running_during_delete_s"] <= 2.0,
            },
        },
    }


def run(*, quick: bool = False, pods: int = 50, grace: int | None = None) -> dict[str, Any]:
    period = grace if grace is not None else (5 if quick else 10)
    return run_on_docker("termination", TerminationBench, lambda b: _measure(b, pods, period))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a shorter grace period")
    parser.add_argument("--pods", type=int, default=50)
    parser.add_argument("--grace", type=int, default=None)
    args = parser.parse_args()
    print(json.dumps(run(quick=args.quick, pods=args.pods, grace=args.grace), indent=2))


if __name__ == "__main__":
    main()
