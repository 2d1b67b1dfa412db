"""The server's own agent: ``k3py server`` runs ``k3py agent`` for its node, as K3s does.

The server and the agent never import each other, so the agent runs as a child process: it
joins through the server's loopback address with the server's join token file (it waits for
both to appear), keeps its state in ``<data-dir>/agent`` beside the server's, and registers its
node with the control-plane role labels. ``--disable-agent`` turns it off. When the server
stops, the agent is stopped too (SIGTERM, then SIGKILL after 10 s); its containers keep running,
as they do when K3s stops.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys

from k3py.cluster.server.settings import ServerSettings

logger = logging.getLogger("k3py.server.agent")

ROLE_LABELS = (
    "node-role.kubernetes.io/control-plane=true",
    "node-role.kubernetes.io/master=true",
)
STOP_SECONDS = 10.0


def command(settings: ServerSettings, *, debug: bool = False) -> list[str]:
    argv = [
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
    ]
    for label in ROLE_LABELS:
        argv += ["--node-label", label]
    return argv


def start(settings: ServerSettings, *, debug: bool = False) -> subprocess.Popen[bytes] | None:
    """Start the node's agent unless ``--disable-agent`` (or the port is chosen at random)."""
    if settings.disable_agent:
        return None
    if settings.https_listen_port == 0:
        logger.warning("no agent for this node: it needs a fixed --https-listen-port")
        return None
    argv = command(settings, debug=debug)
    logger.info("starting this node's agent", extra={"fields": {"command": " ".join(argv)}})
    env = {**os.environ, "K3PY_PARENT_PID": str(os.getpid())}
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, env=env)


def stop(process: subprocess.Popen[bytes] | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(STOP_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
