"""The ``k3py`` processes integration tests and benchmarks start, and how they end.

A free loopback port (for a server whose URL must survive its restarts), the ``k3py server``
command line on loopback with its kubeconfig, and a polite stop: SIGTERM so the process shuts
its parts down in order, SIGKILL only if it has not exited within the grace period.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def k3py_argv(command: str, *args: str) -> list[str]:
    """``python -m k3py <command> …`` with this interpreter (the tree under test).

    Agents and servers (whose own agent takes the flag) get ``--flannel-backend none`` first:
    tests run them in the machine's own namespace, where the pod network must not add a bridge,
    routes or rules. A test in namespaces it created passes another backend after it (the
    last one given wins).
    """
    safe = ("--flannel-backend", "none") if command in ("agent", "server") else ()
    return [sys.executable, "-m", "k3py", command, *safe, *args]


def server_argv(data_dir: Path, kubeconfig: Path, port: int, *extra: str) -> list[str]:
    """``k3py server`` on 127.0.0.1:``port`` (0: the kernel picks; the kubeconfig tells)."""
    return k3py_argv(
        "server",
        "--data-dir",
        str(data_dir),
        "--bind-address",
        "127.0.0.1",
        "--https-listen-port",
        str(port),
        "--write-kubeconfig",
        str(kubeconfig),
        *extra,
    )


def stop_process(process: subprocess.Popen[bytes] | None, grace: float = 15.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds; nothing if it has already exited."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
