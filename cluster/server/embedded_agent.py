"""The server's own agent: ``k3py server`` runs ``k3py agent`` for its node, as K3s does.

The server and the agent never import each other, so the agent runs as a child process: it
joins through the server's loopback address with the server's join token file (it waits for
both to appear) and keeps its state in ``<data-dir>/agent`` beside the server's. A node may not
give itself ``node-role.kubernetes.io/*`` labels (NodeRestriction), so the server puts the
control-plane role labels on its own node, as K3s does: :func:`label_own_node` reads the name
the agent joined under from ``<data-dir>/agent/node-name``. The agent's flags given to the
server (``--node-ip``, ``--flannel-backend``…) are passed on to it
(:mod:`k3py.cluster.server.agentflags`). ``--disable-agent`` turns it off.
An agent that exits while the server runs (a runtime that failed it at start, a crash) is
started again, after 1 s doubling to 30 s while it keeps failing within a minute, as systemd's
``Restart=always`` does for K3s: the server's node must not stay NotReady for a transient error.
When the server stops, the agent is stopped too (SIGTERM, then SIGKILL after 10 s); its
containers keep running, as they do when K3s stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import sys
import threading
import time

from k3py.cluster.api.resources import by_kind
from k3py.cluster.api.status import ApiError
from k3py.cluster.client import ClientError, KubeApi
from k3py.cluster.server.settings import ServerSettings

logger = logging.getLogger("k3py.server.agent")

ROLE_LABELS = (
    "node-role.kubernetes.io/control-plane=true",
    "node-role.kubernetes.io/master=true",
)
STOP_SECONDS = 10.0
RESTART_FIRST_SECONDS = 1.0
RESTART_MAX_SECONDS = 30.0
# An agent that ran this long before it exited starts again after the first delay.
RESTART_HEALTHY_SECONDS = 60.0
LABEL_CHECK_SECONDS = 5.0
FIRST_LABEL_CHECK_SECONDS = 0.2
NODES = by_kind("v1", "Node")


def command(settings: ServerSettings, *, debug: bool = False) -> list[str]:
    return [
        sys.executable,
        "-m",
        "k3py",
        *(["--debug"] if debug else []),
        "agent",
        "--server",
        f"https://127.0.0.1:{settings.https_listen_port}",
        "--token-file",
        str(settings.data_dir / "server" / "token"),
        "--data-dir",
        str(settings.data_dir),
        *settings.agent.argv(settings.cluster_cidr),
        # The node's pods use this server's cluster DNS address, domain and service CIDR.
        "--cluster-dns",
        settings.cluster_dns_ip,
        "--cluster-domain",
        settings.cluster_domain,
        "--service-cidr",
        settings.service_cidr,
    ]


def _own_node_name(settings: ServerSettings) -> str:
    try:
        return (settings.data_dir / "agent" / "node-name").read_text().strip()
    except OSError:
        return ""


async def label_own_node(settings: ServerSettings, api: KubeApi, stop: asyncio.Event) -> None:
    """Keep the role labels on this server's own node (re-added if the Node is re-created)."""
    assert NODES is not None
    wanted = dict(label.split("=", 1) for label in ROLE_LABELS)
    labelled = False
    while not stop.is_set():
        name = _own_node_name(settings)
        try:
            node = await api.get(NODES, name) if name else None
            labels = ((node or {}).get("metadata") or {}).get("labels") or {}
            if node is not None and any(labels.get(k) != v for k, v in wanted.items()):
                await api.patch(NODES, name, {"metadata": {"labels": wanted}})
            labelled = node is not None
        except (ApiError, ClientError):
            pass  # not registered yet, or the server is stopping: look again later
        # Often until the node first registers (the labels should be there when it turns
        # Ready), then now and then in case the Node is deleted and registers again.
        wait = LABEL_CHECK_SECONDS if labelled else FIRST_LABEL_CHECK_SECONDS
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), wait)


class EmbeddedAgent:
    """The node's agent process, started again whenever it exits until :meth:`stop`."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self._argv = argv
        self._env = env
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.process = self._spawn()
        self._watcher = threading.Thread(target=self._watch, name="agent-watch", daemon=True)
        self._watcher.start()

    def _spawn(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self._argv, stdin=subprocess.DEVNULL, env=self._env)

    def _watch(self) -> None:
        delay = RESTART_FIRST_SECONDS
        while True:
            started = time.monotonic()
            code = self.process.wait()
            if self._stopping.is_set():
                return
            if time.monotonic() - started >= RESTART_HEALTHY_SECONDS:
                delay = RESTART_FIRST_SECONDS
            logger.warning(
                "this node's agent exited; starting it again",
                extra={"fields": {"exit_code": code, "after_seconds": delay}},
            )
            if self._stopping.wait(delay):
                return
            delay = min(delay * 2, RESTART_MAX_SECONDS)
            with self._lock:
                if self._stopping.is_set():
                    return
                self.process = self._spawn()

    def stop(self) -> None:
        with self._lock:
            self._stopping.set()
            process = self.process
        if process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def start(settings: ServerSettings, *, debug: bool = False) -> EmbeddedAgent | None:
    """Start the node's agent unless ``--disable-agent`` (or the port is chosen at random)."""
    if settings.disable_agent:
        return None
    if settings.https_listen_port == 0:
        logger.warning("no agent for this node: it needs a fixed --https-listen-port")
        return None
    argv = command(settings, debug=debug)
    logger.info("starting this node's agent", extra={"fields": {"command": " ".join(argv)}})
    # Everything the agent needs comes from the server, as flags: the config file is the
    # server's (its keys are the server's flags), so the agent reads none.
    env = {**os.environ, "K3PY_PARENT_PID": str(os.getpid()), "K3PY_CONFIG_FILE": os.devnull}
    return EmbeddedAgent(argv, env)


def stop(agent: EmbeddedAgent | None) -> None:
    if agent is not None:
        agent.stop()
