"""Where ``k3py server`` spends its CPU under a fixed rate of creates: a cProfile of the server.

Starts ``k3py server`` under :mod:`cProfile` (SQLite, loopback, no agent), offers ConfigMap
creates at ``--rate`` per second for ``--seconds`` from this process (the load generator of
:mod:`bench.server_bench`), stops the server so that the profile is written, and prints the
functions that cost the most (own time and cumulative) plus the achieved rate and latencies.
``python -m bench.profile_server --rate 1000`` is how the write path's costs were found; the
figures it prints go beside the benchmarks' in ``bench/results``.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.server_bench import NAMESPACE, Endpoint, _offered, _session
from tests.processes import server_argv, stop_process


def _start(root: Path, profile: Path | None) -> tuple[subprocess.Popen[bytes], Endpoint]:
    import yaml

    kubeconfig = root / "kubeconfig.yaml"
    argv = server_argv(root / "data", kubeconfig, 0, "--disable-agent")
    assert argv[1:3] == ["-m", "k3py"]
    if profile is not None:
        argv = [argv[0], "-m", "cProfile", "-o", str(profile), *argv[1:]]
    log = (root / "server.log").open("ab")
    process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    deadline = time.monotonic() + 60
    while not kubeconfig.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"k3py server did not start; see {root / 'server.log'}")
        time.sleep(0.05)
    config = yaml.safe_load(kubeconfig.read_text())
    tls = root / "data" / "server" / "tls"
    return process, Endpoint(
        url=config["clusters"][0]["cluster"]["server"],
        ca=str(tls / "server-ca.crt"),
        cert=str(tls / "client-admin.crt"),
        key=str(tls / "client-admin.key"),
    )


async def _load(endpoint: Endpoint, rate: int, seconds: float, repeats: int) -> list[Any]:
    session = await _session(endpoint)
    async with session:
        async with session.post("/api/v1/namespaces", json={"metadata": {"name": NAMESPACE}}):
            pass
        await _offered(session, "create", rate, 1.0, "warm", 0)
        return [
            await _offered(session, "create", rate, seconds, f"profiled{n}", 0)
            for n in range(repeats)
        ]


def profile(rate: int, seconds: float, top: int, *, plain: bool = False, repeats: int = 1) -> str:
    """The profile's text (``plain``: no profiler, only the latency figures)."""
    with tempfile.TemporaryDirectory(prefix="k3py-profile-") as tmp:
        root = Path(tmp)
        out = root / "server.prof"
        process, endpoint = _start(root, None if plain else out)
        try:
            time.sleep(3.0)  # start-up work settles (bootstrap, controllers' first lists)
            figures = asyncio.run(_load(endpoint, rate, seconds, repeats))
        finally:
            stop_process(process, grace=30)
        text = io.StringIO()
        for figure in figures:
            text.write(f"{figure}\n")
        if plain:
            return text.getvalue()
        stats = pstats.Stats(str(out), stream=text)
        stats.sort_stats("tottime").print_stats(top)
        stats.sort_stats("cumulative").print_stats(top)
        return text.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rate", type=int, default=1000, help="creates per second")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--plain", action="store_true", help="no profiler: latencies only")
    args = parser.parse_args()
    sys.stdout.write(
        profile(args.rate, args.seconds, args.top, plain=args.plain, repeats=args.repeats)
    )


if __name__ == "__main__":
    main()
