"""A tunnel stream to a TCP port of a pod: what ``kubectl port-forward`` and the API server's
pod and service proxies reach through the node's agent.

The server names the pod, its address and the port; the agent connects from the node (pods
are reachable from their node on their pod IP) and copies bytes both ways: data the server
sends on the stream goes to the connection, ``stdin-close`` half-closes it, and what the pod
answers travels back on channel 1 until it closes its end. A refused or unreachable port is
reported in the kubelet's words, so kubectl prints what users know.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from k3py.cluster.agent.tunnel.client import StreamChannel
from k3py.shutdown import cancel_and_wait

CONNECT_TIMEOUT = 10.0
_CHUNK = 64 * 1024

logger = logging.getLogger("k3py.agent.tunnel")


class PortForwardRefused(Exception):
    """The port could not be reached; ``status`` is the Status to send back."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.status = {"code": 500, "reason": "InternalError", "message": message}


def _target(params: dict[str, Any]) -> tuple[str, int]:
    address = str(params.get("ip") or "")
    try:
        port = int(params.get("port", 0))
    except (TypeError, ValueError):
        port = 0
    if not address or not 0 < port < 65536:
        raise PortForwardRefused(f"cannot forward to {address or '?'}:{params.get('port')}")
    return address, port


async def port_forward(params: dict[str, Any], channel: StreamChannel) -> None:
    """Connect to the pod's port and copy until either side is done."""
    try:
        await _forward(params, channel)
    except PortForwardRefused as refused:
        await channel.control("error", status=refused.status)


async def _forward(params: dict[str, Any], channel: StreamChannel) -> None:
    address, port = _target(params)
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(address, port), CONNECT_TIMEOUT
        )
    except (OSError, TimeoutError) as err:
        if isinstance(err, ConnectionRefusedError):
            why = "connect: connection refused"
        elif isinstance(err, TimeoutError):
            why = "i/o timeout"
        else:
            why = err.strerror or str(err)
        raise PortForwardRefused(
            f"error forwarding port {port} to pod {params.get('pod', '')}, uid"
            f" {params.get('uid', '')}: failed to connect to {address}:{port}: {why}"
        ) from None
    await channel.control("opened")
    pump = asyncio.create_task(_to_pod(channel, writer))
    try:
        while data := await reader.read(_CHUNK):
            await channel.output(1, data)
    except (ConnectionError, OSError):
        pass
    finally:
        await cancel_and_wait(pump, log=logger)
        writer.close()
        with contextlib.suppress(OSError, ConnectionError):
            await writer.wait_closed()


async def _to_pod(channel: StreamChannel, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            item = await channel.inbox.get()
            if isinstance(item, bytes):
                writer.write(item)
                await writer.drain()
            elif item.get("op") == "stdin-close" and writer.can_write_eof():
                writer.write_eof()
    except (ConnectionError, OSError):
        return  # the pod closed its side: what it had to say is being copied back
