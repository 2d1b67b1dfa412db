"""What the cluster harness asks the host's real ``kubectl``, and how it reads the answers.

Every call goes through the cluster's admin kubeconfig (pointed at the server's forwarded API
port) with a request timeout, so a board that stops answering fails a stage instead of hanging
it; the readers turn ``-o yaml`` lists into the few fields the harness prints and asserts on.
"""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import yaml

WORKLOAD = "httpd"
WORKLOAD_IMAGE = "k3py.local/httpd:latest"  # the air-gap image every image carries
HTTPD_PORT = 8080  # that image's port (k3py.image.containers)


class KubectlError(AssertionError):
    """kubectl failed where the harness needs an answer; the message carries its stderr."""


def kubectl(kubeconfig: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["kubectl", "--kubeconfig", str(kubeconfig), "--request-timeout=30s", *args],
        capture_output=True,
        text=True,
        check=False,
    )
    if check and result.returncode != 0:
        raise KubectlError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
    return result


# One line per watch event: the node, the boot it reports, its Ready condition's status (kubectl
# pads tab-separated columns with spaces, and an absent field is empty).
READY_COLUMNS = (
    'jsonpath={.metadata.name}{"|"}{.status.nodeInfo.bootID}{"|"}'
    '{.status.conditions[?(@.type=="Ready")].status}{"\\n"}'
)


class ReadyWatch:
    """When each Node turned Ready, as a ``kubectl get nodes --watch`` stream delivers it.

    Timing a boot by polling ``kubectl get nodes`` adds the poll's interval and kubectl's own
    start to the figure, and every poll costs the emulated server a TLS handshake while the
    boards boot; a watch event arrives within milliseconds of the status write that made the
    node Ready. kubectl is started again when its watch ends (the server closes watches after
    a while, and refuses them before its API is up); the list it replays then can only make a
    time later, never earlier.
    """

    def __init__(self, kubeconfig: Path) -> None:
        self._kubeconfig = kubeconfig
        self._events: list[tuple[float, str, str, str]] = []  # (monotonic, node, boot, Ready)
        self._changed = threading.Condition()
        self._stopped = threading.Event()
        self._process: subprocess.Popen[str] | None = None
        self._thread = threading.Thread(target=self._run, name="ready-watch", daemon=True)

    def __enter__(self) -> ReadyWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop watching (again is harmless): an idle figure taken afterwards carries no
        watcher on the server."""
        self._stopped.set()
        with self._changed:
            process = self._process
        if process is not None:
            process.kill()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stopped.is_set():
            with subprocess.Popen(
                ["kubectl", "--kubeconfig", str(self._kubeconfig), "get", "nodes", "--watch",
                 "-o", READY_COLUMNS],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            ) as process:  # fmt: skip
                with self._changed:
                    self._process = process
                assert process.stdout is not None
                for line in process.stdout:
                    fields = [field.strip() for field in line.split("|")]
                    if len(fields) == 3:
                        with self._changed:
                            self._events.append((time.monotonic(), *fields))  # type: ignore[arg-type]
                            self._changed.notify_all()
            self._stopped.wait(1.0)

    def ready_at(self, name: str, since: float, old_boot: str = "") -> float | None:
        """The first moment since ``since`` the node was seen Ready on a boot other than
        ``old_boot`` (monotonic), or None."""
        with self._changed:
            return next(
                (at for at, node, boot, ready in self._events
                 if node == name and at >= since and ready == "True" and boot != old_boot),
                None,
            )  # fmt: skip

    def wait(self, name: str, since: float, timeout: float, old_boot: str = "") -> float:
        """Seconds from ``since`` until ``name`` turned Ready (on a boot other than
        ``old_boot``); TimeoutError after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while (at := self.ready_at(name, since, old_boot)) is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{name} did not turn Ready within {timeout:.0f} s")
                self._changed.wait(min(left, 1.0))
        return at - since


def nodes(kubeconfig: Path) -> dict[str, dict[str, str]]:
    result = kubectl(kubeconfig, "get", "nodes", "-o", "yaml", check=False)
    if result.returncode != 0:
        return {}
    found: dict[str, dict[str, str]] = {}
    for item in yaml.safe_load(result.stdout).get("items", []):
        status = item.get("status", {})
        ready = next(
            (c["status"] for c in status.get("conditions", []) if c.get("type") == "Ready"), ""
        )
        address = next(
            (a["address"] for a in status.get("addresses", []) if a.get("type") == "InternalIP"),
            "",
        )
        arch = status.get("nodeInfo", {}).get("architecture", "")
        cidr = item.get("spec", {}).get("podCIDR", "")
        found[item["metadata"]["name"]] = {
            "ready": ready, "arch": arch, "ip": address, "podCIDR": cidr
        }  # fmt: skip
    return found


def pods(kubeconfig: Path, selector: str) -> list[dict[str, str]]:
    result = kubectl(kubeconfig, "get", "pods", "-l", selector, "-o", "yaml", check=False)
    if result.returncode != 0:
        return []
    return [
        {
            "name": item["metadata"]["name"],
            "phase": item.get("status", {}).get("phase", ""),
            "node": item.get("spec", {}).get("nodeName", ""),
            "ip": item.get("status", {}).get("podIP", ""),
        }
        for item in yaml.safe_load(result.stdout).get("items", [])
    ]


def workload_manifest() -> str:
    """A DaemonSet of the air-gap httpd image: one pod on every node, whatever its CPU."""
    labels = {"app": WORKLOAD}
    daemonset = {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": WORKLOAD, "namespace": "default"},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "httpd",
                            "image": WORKLOAD_IMAGE,
                            "imagePullPolicy": "Never",  # air gap: the image is on the card
                            "ports": [{"containerPort": HTTPD_PORT}],
                        }
                    ]
                },
            },
        },
    }
    return yaml.safe_dump(daemonset, sort_keys=False)
