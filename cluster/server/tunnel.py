"""The server's end of the agent tunnels: one websocket per connected node, streams over it.

An agent connects to ``/v1-k3py/connect`` with its node certificate (see
:mod:`k3py.cluster.server.supervisor`); :class:`TunnelHub` keeps the live :class:`NodeTunnel`
of each node (a reconnecting agent replaces its old tunnel). The pod log and exec proxies
(:mod:`k3py.cluster.server.nodeproxy`) open a :class:`NodeStream` on the pod's node, read its
output and feed its stdin. The frame format is :mod:`k3py.cluster.api.tunnel`. Each stream's
inbox is bounded: a slow reader holds the node's socket back instead of growing memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from aiohttp import WSMsgType, web

from k3py.cluster.api import tunnel
from k3py.cluster.api.status import ApiError

logger = logging.getLogger("k3py.server.tunnel")

INBOX = 64
OPEN_TIMEOUT = 30.0


@dataclass(frozen=True)
class Output:
    channel: int
    payload: bytes


def node_status(value: Any) -> dict[str, Any]:
    """A node's error Status made safe to relay: an HTTP error code, strings where expected.

    Nodes are not trusted: a code that is not an integer from 400 to 599 becomes 502.
    """
    status = value if isinstance(value, dict) else {}
    code = status.get("code")
    if isinstance(code, bool) or not isinstance(code, int) or not 400 <= code <= 599:
        code = 502
    return {
        "code": code,
        "reason": str(status.get("reason") or "InternalError")[:256],
        "message": str(status.get("message") or "")[:4096],
    }


def exit_code(value: Any) -> int:
    """A node's exit code: an int32, or -1 for anything else."""
    if isinstance(value, bool) or not isinstance(value, int) or not -(2**31) <= value < 2**31:
        return -1
    return int(value)


class NodeStream:
    """One request carried to a node: output comes from :meth:`output`, stdin goes in."""

    def __init__(self, node_tunnel: NodeTunnel, stream_id: int) -> None:
        self._tunnel = node_tunnel
        self.id = stream_id
        self.inbox: asyncio.Queue[dict[str, Any] | Output] = asyncio.Queue(INBOX)
        self.exit_code: int | None = None
        self.error: dict[str, Any] | None = None
        self.ended = False

    async def output(self) -> AsyncIterator[Output]:
        """Output chunks until the node ends the stream (then ``exit_code``/``error`` are set)."""
        while not self.ended:
            item = await self.inbox.get()
            if isinstance(item, Output):
                yield item
                continue
            op = item.get("op")
            if op == "exit":
                self.exit_code = exit_code(item.get("code", -1))
            elif op == "error":
                self.error = node_status(item.get("status"))
            elif op == "end":
                self.ended = True

    async def stdin(self, data: bytes) -> None:
        await self._tunnel.send_data(self.id, tunnel.STDIN, data)

    async def close_stdin(self) -> None:
        await self._tunnel.send_control("stdin-close", self.id)

    async def resize(self, width: int, height: int) -> None:
        await self._tunnel.send_control("resize", self.id, width=width, height=height)

    async def close(self) -> None:
        if self._tunnel.forget(self.id) and not self.ended:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self._tunnel.send_control("close", self.id)


class NodeTunnel:
    def __init__(self, node: str, ws: web.WebSocketResponse) -> None:
        self.node = node
        self._ws = ws
        self._streams: dict[int, NodeStream] = {}
        self._ids = itertools.count(1)
        self._send_lock = asyncio.Lock()

    async def send_control(self, op: str, stream: int, **fields: Any) -> None:
        async with self._send_lock:
            await self._ws.send_str(tunnel.encode_control(op, stream, **fields))

    async def send_data(self, stream: int, channel: int, payload: bytes) -> None:
        async with self._send_lock:
            await self._ws.send_bytes(tunnel.encode_data(stream, channel, payload))

    def forget(self, stream_id: int) -> bool:
        return self._streams.pop(stream_id, None) is not None

    async def open(self, kind: str, params: dict[str, Any]) -> NodeStream:
        """Open a stream; raises the node's refusal (a Status) as an ApiError."""
        stream = NodeStream(self, next(self._ids))
        self._streams[stream.id] = stream
        try:
            await self.send_control("open", stream.id, kind=kind, params=params)
            async with asyncio.timeout(OPEN_TIMEOUT):
                first = await stream.inbox.get()
        except (TimeoutError, ConnectionError, RuntimeError) as err:
            self.forget(stream.id)
            raise ApiError(
                502, "BadGateway", f"node {self.node} did not answer the {kind} request: {err}"
            ) from None
        if isinstance(first, dict) and first.get("op") in {"error", "end"}:
            self.forget(stream.id)
            status = node_status(first.get("status"))
            raise ApiError(
                status["code"],
                status["reason"],
                status["message"] or f"node {self.node} refused the {kind} request",
            )
        if isinstance(first, Output):
            await stream.inbox.put(first)  # keep the order: data before anything else
        return stream

    async def run(self) -> None:
        """Deliver the node's frames to their streams until the websocket closes."""
        try:
            async for message in self._ws:
                if message.type == WSMsgType.BINARY:
                    try:
                        data = tunnel.decode_data(message.data)
                    except tunnel.TunnelProtocolError:
                        continue
                    stream = self._streams.get(data.stream)
                    if stream is not None:
                        await stream.inbox.put(Output(data.channel, data.payload))
                elif message.type == WSMsgType.TEXT:
                    try:
                        control = tunnel.decode_control(message.data)
                    except tunnel.TunnelProtocolError:
                        continue
                    stream = self._streams.get(control["stream"])
                    if stream is not None:
                        if control["op"] == "end":
                            self.forget(stream.id)
                        await stream.inbox.put(control)
                elif message.type == WSMsgType.ERROR:
                    break
        finally:
            status = {
                "code": 502,
                "reason": "BadGateway",
                "message": f"node {self.node} disconnected",
            }
            for stream in list(self._streams.values()):
                with contextlib.suppress(asyncio.QueueFull):
                    stream.inbox.put_nowait({"op": "error", "stream": stream.id, "status": status})
                with contextlib.suppress(asyncio.QueueFull):
                    stream.inbox.put_nowait({"op": "end", "stream": stream.id})
            self._streams.clear()

    async def close(self) -> None:
        await self._ws.close()


class TunnelHub:
    """The connected nodes' tunnels (one per node name)."""

    def __init__(self) -> None:
        self._tunnels: dict[str, NodeTunnel] = {}

    def get(self, node: str) -> NodeTunnel | None:
        return self._tunnels.get(node)

    @property
    def nodes(self) -> list[str]:
        return sorted(self._tunnels)

    async def serve(self, node: str, ws: web.WebSocketResponse) -> None:
        node_tunnel = NodeTunnel(node, ws)
        previous = self._tunnels.get(node)
        self._tunnels[node] = node_tunnel
        if previous is not None:
            await previous.close()
        logger.info("agent tunnel connected", extra={"fields": {"node": node}})
        try:
            await node_tunnel.run()
        finally:
            if self._tunnels.get(node) is node_tunnel:
                del self._tunnels[node]
            logger.info("agent tunnel closed", extra={"fields": {"node": node}})

    async def close(self) -> None:
        for node_tunnel in list(self._tunnels.values()):
            with contextlib.suppress(Exception):
                await node_tunnel.close()


TUNNELS = web.AppKey("k3py.tunnels", TunnelHub)
