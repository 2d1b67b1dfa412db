"""A real cluster for the docker tier: ``k3py server`` and ``k3py agent`` processes on loopback.

Node names carry a random suffix and every container the tests' agents create is removed at
the end by its node label, so parallel runs on one Docker engine do not meet.
"""

from __future__ import annotations

import json
import os
import secrets
import ssl
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from tests.processes import free_port, k3py_argv, stop_process
from tests.server.process import ServerProcess

T = TypeVar("T")


def unique(name: str) -> str:
    return f"{name}-{secrets.token_hex(3)}"


def wait_until(
    check: Callable[[], T | None], timeout: float, what: str, interval: float = 0.25
) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def docker(*args: str, check: bool = True) -> str:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed: {result.stderr}")
    return result.stdout


def remove_node_containers(node: str) -> None:
    ids = docker("ps", "-aq", "--filter", f"label=io.k3py.node={node}").split()
    if ids:
        docker("rm", "-f", *ids, check=False)


def node_containers(node: str, *, running: bool = True) -> dict[str, dict[str, Any]]:
    """Containers of a node's pods by name → inspect data (sandboxes excluded)."""
    flags = [] if running else ["-a"]
    ids = docker("ps", "-q", *flags, "--filter", f"label=io.k3py.node={node}").split()
    if not ids:
        return {}
    # A container may be removed between `ps` and `inspect`: docker then still prints the
    # others and exits non-zero, which is not a failure here.
    found: dict[str, dict[str, Any]] = {}
    for item in json.loads(docker("inspect", *ids, check=False) or "[]"):
        labels = item["Config"]["Labels"]
        if labels.get("io.k3py.container.kind") != "sandbox":
            found[item["Name"].lstrip("/")] = item
    return found


class Server(ServerProcess):
    """A server on a fixed port (agents keep its URL across its restarts)."""

    def __init__(self, root: Path, *extra: str, embedded_agent: str | None = None) -> None:
        self.port = free_port()
        args = ["--https-listen-port", str(self.port)]
        if embedded_agent is None:
            args.append("--disable-agent")
        super().__init__(root, *args, *extra)
        self.embedded_agent = embedded_agent

    def start(self, timeout: float = 30.0) -> None:
        # The embedded agent inherits the environment: give it a unique node name.
        previous = os.environ.get("K3PY_NODE_NAME")
        if self.embedded_agent is not None:
            os.environ["K3PY_NODE_NAME"] = self.embedded_agent
        try:
            super().start(timeout)
        finally:
            if previous is None:
                os.environ.pop("K3PY_NODE_NAME", None)
            else:
                os.environ["K3PY_NODE_NAME"] = previous

    @property
    def token(self) -> str:
        return (self.data_dir / "server" / "token").read_text().strip()

    @property
    def https_url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def kubectl_json(self, *args: str) -> Any:
        return json.loads(self.kubectl(*args, "-o", "json").stdout)

    def node_ready(self, node: str) -> bool:
        result = self.kubectl("get", "node", node, "-o", "json", check=False)
        if result.returncode != 0:
            return False
        conditions = json.loads(result.stdout)["status"].get("conditions") or []
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    def pod(self, name: str, namespace: str = "default") -> dict[str, Any] | None:
        result = self.kubectl("get", "pod", name, "-n", namespace, "-o", "json", check=False)
        return json.loads(result.stdout) if result.returncode == 0 else None

    def pod_running(self, name: str) -> dict[str, Any] | None:
        pod = self.pod(name)
        if pod is None or (pod.get("status") or {}).get("phase") != "Running":
            return None
        statuses = pod["status"].get("containerStatuses") or []
        return pod if statuses and all(s.get("ready") for s in statuses) else None


class Agent:
    def __init__(self, root: Path, node: str, server: Server) -> None:
        self.root = root
        self.node = node
        self.server = server
        self.data_dir = root / node
        self.log_path = root / f"{node}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def argv(self, *, token: str | None) -> list[str]:
        argv = k3py_argv(
            "agent",
            "--server",
            self.server.https_url,
            "--data-dir",
            str(self.data_dir),
            "--node-name",
            self.node,
        )
        return [*argv, "--token", token] if token else argv

    def start(self, *, token: str | None = "server") -> None:
        token_text = self.server.token if token == "server" else token
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv(token=token_text), stdout=log, stderr=subprocess.STDOUT
            )

    def stop(self) -> None:
        stop_process(self.process)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def ssl_context(self) -> ssl.SSLContext:
        directory = self.data_dir / "agent"
        context = ssl.create_default_context(cafile=str(directory / "server-ca.crt"))
        context.load_cert_chain(
            str(directory / "client-kubelet.crt"), str(directory / "client-kubelet.key")
        )
        return context

    def rss_kb(self) -> int:
        assert self.process is not None
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0
