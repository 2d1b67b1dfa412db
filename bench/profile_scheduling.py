"""Where ``k3py server`` spends its CPU while a Deployment's pods are created and bound.

Starts ``k3py server`` (SQLite, loopback, no agent) with N hollow nodes served from this process
(:mod:`tests.controllers.hollow`) and P bare pods Running on them (as the benchmark has by
then), then creates a Deployment of R replicas through the API and
samples the server with ``py-spy`` (``--format raw``: folded stacks) from the create until
every pod is bound: the path :mod:`bench.scheduler_bench` reports as
``deployment_scheduled_pods_per_s``. The summary printed is the functions with the most samples
on top of the stack (own time) and anywhere in it (inclusive), as shares of all samples, plus
the pods/s of the profiled run (lower than the benchmark's: the sampler shares the cores).
``python -m bench.profile_scheduling`` is how ``bench/results/profile_scheduling_path.txt``
was made.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from bench.scheduler_bench import _pod, big_deployment
from k3py.cluster.client import KubeClient
from k3py.cluster.server.controllers.base import DEPLOYMENTS, PODS
from tests.controllers.hollow import HollowNodes
from tests.controllers.serverproc import ServerProcess


def _py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).exists():
        raise RuntimeError("py-spy is not installed: .venv/bin/pip install py-spy")
    return found


def _frame(entry: str) -> str:
    # py-spy's raw frames read "function (path/to/file.py:line)": keep the function and file.
    name, _, where = entry.partition(" (")
    path = where.rsplit(":", 1)[0]
    parts = Path(path).parts
    short = "/".join(parts[-2:]) if parts else path
    return f"{name} ({short})"


def summarise(folded: str, top: int) -> str:
    """Own and inclusive sample shares per function from py-spy's folded stacks."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in folded.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame(f) for f in stack.split(";")[1:]]  # the first is the thread
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    lines = [f"samples: {total}", "", "own time (top of stack):"]
    for frame, count in own.most_common(top):
        lines.append(f"  {100 * count / total:5.1f} %  {frame}")
    lines += ["", "inclusive (anywhere in the stack):"]
    for frame, count in inclusive.most_common(top):
        lines.append(f"  {100 * count / total:5.1f} %  {frame}")
    return "\n".join(lines) + "\n"


async def _bare_pods(client: KubeClient, hollow: HollowNodes, pods: int) -> None:
    """``pods`` bare pods created and Running first, as the benchmark has before its Deployment."""
    gate = asyncio.Semaphore(64)

    async def create(i: int) -> None:
        async with gate:
            await client.create(PODS, _pod(f"bench-{i}", i % 100), "default")

    await asyncio.gather(*(create(i) for i in range(pods)))
    started = time.perf_counter()
    while (
        sum(
            1
            for p in hollow.pods.list("default")
            if (p.get("status") or {}).get("phase") == "Running"
        )
        < pods
    ):
        if time.perf_counter() - started > 600:
            raise TimeoutError("the bare pods were not Running within 600 s")
        await asyncio.sleep(0.5)


async def _profiled_run(
    workdir: Path, nodes: int, pods: int, replicas: int, out: Path | None
) -> float:
    server = ServerProcess(workdir, "--disable-agent")
    await server.start()
    assert server.process is not None
    client = KubeClient.from_kubeconfig(server.kubeconfig)
    hollow = HollowNodes(client, renew_interval=10.0, concurrency=64)
    spy: asyncio.subprocess.Process | None = None
    try:
        await hollow.start(kubelets=16)
        await hollow.add([f"hollow-{i:04d}" for i in range(nodes)])
        await asyncio.sleep(5)  # pod CIDRs assigned, first renewals through
        await _bare_pods(client, hollow, pods)
        if out is not None:
            spy = await asyncio.create_subprocess_exec(
                _py_spy(), "record", "--pid", str(server.process.pid), "--format", "raw",
                "--rate", "250", "--output", str(out), "--nonblocking",
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
            await asyncio.sleep(1.0)  # the sampler attached
        deployment = big_deployment(replicas)
        started = time.perf_counter()
        await client.create(DEPLOYMENTS, deployment, "default")
        while True:
            bound = sum(
                1
                for p in hollow.pods.list("default")
                if (p["metadata"].get("labels") or {}).get("app") == "big"
                and p["spec"].get("nodeName")
            )
            if bound >= replicas:
                break
            if time.perf_counter() - started > 600:
                raise TimeoutError("the Deployment's pods were not bound within 600 s")
            await asyncio.sleep(0.1)
        return replicas / (time.perf_counter() - started)
    finally:
        if spy is not None:
            if spy.returncode is None:
                spy.send_signal(signal.SIGINT)
            await asyncio.wait_for(spy.wait(), 60)
        await hollow.stop()
        await client.close()
        await server.stop()


def profile(
    nodes: int,
    pods: int,
    replicas: int,
    top: int,
    *,
    plain: bool = False,
    folded: Path | None = None,
) -> str:
    """The profile's summary (``plain``: no sampler, only the pods/s); ``folded`` keeps the
    sampler's stacks."""
    with tempfile.TemporaryDirectory(prefix="k3py-profile-scheduling-") as tmp:
        out = None if plain else (folded or Path(tmp) / "server.folded")
        rate = asyncio.run(_profiled_run(Path(tmp), nodes, pods, replicas, out))
        sampler = "no sampler" if out is None else "sampled with py-spy (it shares the cores)"
        header = (
            f"Deployment of {replicas} replicas over {nodes} hollow nodes running {pods} bare"
            " pods, created -> all bound,"
            f" {sampler}: {rate:.1f} pods/s, load average {os.getloadavg()[0]:.1f}\n"
        )
        return header + ("" if out is None else summarise(out.read_text(), top))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--pods", type=int, default=10000, help="bare pods Running first")
    parser.add_argument("--replicas", type=int, default=1000)
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--plain", action="store_true", help="no sampler: pods/s only")
    parser.add_argument("--folded", type=Path, help="keep py-spy's folded stacks here")
    args = parser.parse_args()
    sys.stdout.write(
        profile(
            args.nodes, args.pods, args.replicas, args.top, plain=args.plain, folded=args.folded
        )
    )


if __name__ == "__main__":
    main()
