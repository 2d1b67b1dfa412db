"""``kubectl exec``/``attach`` over a plain HTTP upgrade to SPDY/3.1 (kubectl before 1.30, or
with KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false), relayed through the node's tunnel.

The remote command protocol (``v4.channel.k8s.io``) over SPDY: the client opens one stream per
channel, each named by its ``streamType`` header (``error``, ``stdin``, ``stdout``, ``stderr``,
``resize``); once the ones the query asks for are open, the node's process starts. Stdin data
goes to it (a FIN closes its stdin), its output comes back on ``stdout``/``stderr``, terminal
sizes arrive on ``resize`` as a run of JSON objects, and the end is a ``Status`` written on
``error`` (``Success``, or ``NonZeroExitCode`` with the code), as the kubelet writes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any

from aiohttp import web

from k3py.cluster.api import status
from k3py.cluster.server.portforward import HijackedBytes
from k3py.cluster.server.spdy import Frame, SpdyError, SpdyReader, SpdyWriter
from k3py.cluster.server.tunnel import NodeStream, NodeTunnel

PROTOCOLS = ("v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io", "channel.k8s.io")
_CHUNK = 32 * 1024
_OUTPUT = {1: "stdout", 2: "stderr"}


def wants_spdy(request: web.Request) -> bool:
    return request.headers.get("Upgrade", "").lower().startswith("spdy/")


def _protocol(request: web.Request) -> str:
    offered = [
        version.strip()
        for header in request.headers.getall("X-Stream-Protocol-Version", [])
        for version in header.split(",")
    ]
    for version in PROTOCOLS:
        if version in offered:
            return version
    raise status.ApiError(
        403,
        "Forbidden",
        f"unable to upgrade: unable to negotiate protocol: client supports {offered},"
        f" server supports {list(PROTOCOLS)}",
    )


async def serve(
    request: web.Request,
    node_tunnel: NodeTunnel,
    kind: str,
    params: dict[str, Any],
    exit_status: Callable[[NodeStream], dict[str, Any]],
) -> web.StreamResponse:
    """Upgrade ``request`` to SPDY and run ``kind`` ("exec"/"attach") with ``params``."""
    version = _protocol(request)
    transport, protocol = request.transport, request.protocol
    if not isinstance(transport, asyncio.Transport):
        raise ConnectionError("the client went away")
    conn = HijackedBytes(transport, protocol)
    transport.write(
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
        b"X-Stream-Protocol-Version: " + version.encode() + b"\r\n\r\n"
    )
    session = _Session(conn, node_tunnel, kind, params, exit_status)
    try:
        await session.run()
    except (ConnectionError, RuntimeError, SpdyError):
        pass
    finally:
        transport.close()
    return web.Response(status=101)  # not sent: the connection is closed


class _Session:
    def __init__(
        self,
        conn: HijackedBytes,
        node_tunnel: NodeTunnel,
        kind: str,
        params: dict[str, Any],
        exit_status: Callable[[NodeStream], dict[str, Any]],
    ) -> None:
        self._conn = conn
        self._tunnel = node_tunnel
        self._kind = kind
        self._params = params
        self._exit_status = exit_status
        self._reader = SpdyReader()
        self._writer = SpdyWriter()
        self._lock = asyncio.Lock()
        self._streams: dict[str, int] = {}  # streamType -> SPDY stream id
        self._node: NodeStream | None = None
        self._started = asyncio.Event()  # every stream the query asks for is open
        self._ready = asyncio.Event()  # the node's process is there (or refused)
        self._early: list[Frame] = []
        self._resize = b""

    def _expected(self) -> set[str]:
        wanted = {"error"}
        if self._params.get("stdin"):
            wanted.add("stdin")
        if self._params.get("stdout"):
            wanted.add("stdout")
        if self._params.get("stderr") and not self._params.get("tty"):
            wanted.add("stderr")
        if self._params.get("tty"):
            wanted.add("resize")
        return wanted

    async def _send(self, frame: bytes) -> None:
        async with self._lock:
            await self._conn.send(frame)

    async def run(self) -> None:
        relay = asyncio.create_task(self._relay())
        try:
            async for data in self._conn.chunks():
                for frame in self._reader.feed(data):
                    await self._handle(frame)
                if relay.done():
                    break
            await asyncio.wait_for(asyncio.shield(relay), 5)
        finally:
            relay.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await relay
            if self._node is not None:
                await self._node.close()

    async def _handle(self, frame: Frame) -> None:
        if frame.kind == "ping":
            await self._send(self._writer.ping(frame.value))
        elif frame.kind == "syn_stream":
            await self._send(self._writer.syn_reply(frame.stream_id))
            kind = (frame.headers.get("streamtype") or [""])[0]
            self._streams[kind] = frame.stream_id
            if self._expected() <= set(self._streams):
                self._started.set()
        elif frame.kind == "data":
            if not self._ready.is_set():
                if not self._started.is_set():
                    self._early.append(frame)
                    return
                await self._ready.wait()
            await self._input(frame)

    async def _input(self, frame: Frame) -> None:
        node = self._node
        if node is None:
            return
        if frame.stream_id == self._streams.get("stdin"):
            if frame.payload:
                await node.stdin(frame.payload)
            if frame.fin:
                await node.close_stdin()
        elif frame.stream_id == self._streams.get("resize"):
            self._resize += frame.payload
            decoder = json.JSONDecoder()
            while self._resize.strip():
                text = self._resize.decode(errors="replace").lstrip()
                try:
                    size, end = decoder.raw_decode(text)
                except ValueError:
                    break
                self._resize = text[end:].encode()
                with contextlib.suppress(AttributeError, TypeError, ValueError):
                    await node.resize(int(size.get("Width", 0)), int(size.get("Height", 0)))

    async def _relay(self) -> None:
        await self._started.wait()
        try:
            self._node = await self._tunnel.open(self._kind, self._params)
        except status.ApiError as err:
            self._ready.set()
            await self._finish(err.to_status())
            return
        for frame in self._early:
            await self._input(frame)
        self._early.clear()
        self._ready.set()
        async for chunk in self._node.output():
            stream_id = self._streams.get(_OUTPUT.get(chunk.channel, "stdout"))
            if stream_id is None:
                continue
            for start in range(0, len(chunk.payload), _CHUNK):
                piece = chunk.payload[start : start + _CHUNK]
                await self._send(self._writer.data(stream_id, piece))
        await self._finish(self._exit_status(self._node))

    async def _finish(self, result: dict[str, Any]) -> None:
        error = self._streams["error"]
        body = json.dumps({"kind": "Status", "apiVersion": "v1", **result}).encode()
        await self._send(self._writer.data(error, body, fin=True))
        for kind, stream_id in self._streams.items():
            if kind in ("stdout", "stderr"):
                await self._send(self._writer.data(stream_id, b"", fin=True))
