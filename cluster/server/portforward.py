"""``pods/portforward``: TCP connections to a pod's ports, carried through its node's tunnel.

Three wire protocols end here:

- ``SPDY/3.1+portforward.k8s.io``, what kubectl 1.30+ tries first: a websocket carries a
  SPDY session (:mod:`.spdy`); each local connection kubectl accepts becomes a pair of SPDY
  streams (``streamType`` ``error`` and ``data``, one ``requestID``, a ``port``), and each
  pair becomes one ``portforward`` tunnel stream to the node.
- The same SPDY session on the connection itself after an HTTP ``Upgrade: SPDY/3.1`` (older
  kubectl, or ``KUBECTL_PORT_FORWARD_WEBSOCKETS=false``).
- The channel protocol (``v4.channel.k8s.io``/``v5``) of the Python client's
  ``portforward``: the ports come in the query (``ports=80,8080``), port *i* uses channel
  2i for data and 2i+1 for errors, each channel starts with the port number (2 bytes,
  little-endian), and one connection per port lives as long as the websocket.

The agent connects to the pod's IP from the node (:mod:`k3py.cluster.agent.tunnel.portforward`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import WSMsgType, web

from k3py.cluster.api import status
from k3py.cluster.api.resources import by_kind
from k3py.cluster.server.rest.context import REST
from k3py.cluster.server.rest.http import RequestTarget
from k3py.cluster.server.spdy import SpdyError, SpdyReader, SpdyWriter
from k3py.cluster.server.tunnel import TUNNELS, NodeStream, NodeTunnel

PODS = by_kind("v1", "Pod")
SPDY_TUNNEL = "SPDY/3.1+portforward.k8s.io"
CHANNEL_PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
_CHUNK = 32 * 1024
PORTFORWARD_PROTOCOL = "portforward.k8s.io"
_QUEUED_CHUNKS = 64
_WRITE_BUFFER = 1024 * 1024


async def pod_target(
    request: web.Request, target: RequestTarget
) -> tuple[dict[str, Any], NodeTunnel]:
    """The pod (running, with an address) and its node's tunnel."""
    assert PODS is not None
    assert target.name is not None
    pod = await request.app[REST].objects.get(PODS, target.namespace, target.name)
    node = (pod.get("spec") or {}).get("nodeName")
    pod_status = pod.get("status") or {}
    if not node or pod_status.get("phase") != "Running" or not pod_status.get("podIP"):
        raise status.bad_request(
            f"unable to forward port because pod is not running. Current status="
            f"{pod_status.get('phase', 'Pending')}"
        )
    hub = request.app.get(TUNNELS)
    node_tunnel = hub.get(str(node)) if hub is not None else None
    if node_tunnel is None:
        raise status.ApiError(
            503,
            "ServiceUnavailable",
            f"the agent of node {node} is not connected to this server; check that it runs",
        )
    return pod, node_tunnel


async def open_port(node_tunnel: NodeTunnel, pod: dict[str, Any], port: int) -> NodeStream:
    """A tunnel stream connected to ``port`` of ``pod`` (raises the node's refusal)."""
    meta = pod.get("metadata") or {}
    params = {
        "namespace": meta.get("namespace", ""),
        "pod": meta.get("name", ""),
        "uid": meta.get("uid", ""),
        "ip": (pod.get("status") or {}).get("podIP", ""),
        "port": port,
    }
    return await node_tunnel.open("portforward", params)


def _ports(request: web.Request) -> list[int]:
    ports: list[int] = []
    for value in request.query.getall("ports", []):
        for part in value.split(","):
            try:
                port = int(part)
            except ValueError:
                raise status.bad_request(f"invalid port {part!r}") from None
            if not 0 < port < 65536:
                raise status.bad_request(f"port {port} must be between 1 and 65535")
            ports.append(port)
    return ports


async def pod_portforward(request: web.Request, target: RequestTarget) -> web.StreamResponse:
    pod, node_tunnel = await pod_target(request, target)
    if request.headers.get("Upgrade", "").lower().startswith("spdy/"):
        return await _spdy_upgrade(request, node_tunnel, pod)
    ws = web.WebSocketResponse(
        protocols=(SPDY_TUNNEL, *CHANNEL_PROTOCOLS), max_msg_size=16 * 1024 * 1024
    )
    if not ws.can_prepare(request).ok:
        raise status.bad_request(
            "Upgrade request required: port-forward speaks SPDY over a websocket"
            f" ({SPDY_TUNNEL}) or the websocket channel protocol"
        )
    ports = _ports(request)
    await ws.prepare(request)
    try:
        if ws.ws_protocol == SPDY_TUNNEL:
            await SpdyPortForward(WebSocketBytes(ws), node_tunnel, pod).run()
        else:
            await _channel_portforward(ws, node_tunnel, pod, ports)
    except (ConnectionError, RuntimeError):
        pass
    finally:
        await ws.close()
    return ws


# --- the channel protocol (the Python client) ----------------------------------------------


async def _channel_portforward(
    ws: web.WebSocketResponse, node_tunnel: NodeTunnel, pod: dict[str, Any], ports: list[int]
) -> None:
    streams: list[NodeStream | None] = []
    for index, port in enumerate(ports):
        prefix = port.to_bytes(2, "little")
        await ws.send_bytes(bytes([2 * index]) + prefix)
        await ws.send_bytes(bytes([2 * index + 1]) + prefix)
        try:
            streams.append(await open_port(node_tunnel, pod, port))
        except status.ApiError as err:
            await ws.send_bytes(bytes([2 * index + 1]) + err.message.encode())
            streams.append(None)
    copies = [
        asyncio.create_task(_copy_out(ws, stream, 2 * index))
        for index, stream in enumerate(streams)
        if stream is not None
    ]
    reader = asyncio.create_task(_copy_in(ws, streams))
    outputs = asyncio.ensure_future(_all(copies))
    try:
        if copies:
            await asyncio.wait([reader, outputs], return_when=asyncio.FIRST_COMPLETED)
    finally:
        outputs.cancel()
        reader.cancel()
        for task in copies:
            task.cancel()
        for stream in streams:
            if stream is not None:
                await stream.close()


async def _all(tasks: list[asyncio.Task[None]]) -> None:
    await asyncio.gather(*tasks)


async def _copy_out(ws: web.WebSocketResponse, stream: NodeStream, channel: int) -> None:
    async for chunk in stream.output():
        await ws.send_bytes(bytes([channel]) + chunk.payload)
    if stream.error:
        await ws.send_bytes(bytes([channel + 1]) + str(stream.error.get("message")).encode())


async def _copy_in(ws: web.WebSocketResponse, streams: list[NodeStream | None]) -> None:
    async for message in ws:
        if message.type != WSMsgType.BINARY or not message.data:
            continue
        channel = message.data[0]
        index = channel // 2
        if channel % 2 == 0 and index < len(streams):
            stream = streams[index]
            if stream is not None:
                await stream.stdin(message.data[1:])


# --- SPDY over the websocket (kubectl) -----------------------------------------------------


@dataclass
class _Pair:
    """One forwarded connection: kubectl's error and data streams of one request id."""

    port: int
    error_stream: int = 0
    data_stream: int = 0
    pending: list[bytes] = field(default_factory=list)
    half_closed: bool = False
    node_stream: NodeStream | None = None
    task: asyncio.Task[None] | None = None


class SessionBytes(Protocol):
    """Where a SPDY session's bytes come from and go to: a websocket or a hijacked socket."""

    def chunks(self) -> AsyncIterator[bytes]: ...

    async def send(self, data: bytes) -> None: ...


class WebSocketBytes:
    """The SPDY byte stream in a websocket's binary messages (kubectl's tunnel)."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self._ws = ws

    async def chunks(self) -> AsyncIterator[bytes]:
        async for message in self._ws:
            if message.type == WSMsgType.BINARY:
                yield message.data

    async def send(self, data: bytes) -> None:
        await self._ws.send_bytes(data)


class HijackedBytes:
    """The connection of an HTTP ``Upgrade: SPDY/3.1`` (kubectl before 1.30, or with
    KUBECTL_PORT_FORWARD_WEBSOCKETS=false), taken over from aiohttp, whose parser hands over
    only websocket and tcp upgrades: its protocol's byte callbacks are replaced for the rest
    of the connection, which the session closes when it ends."""

    def __init__(self, transport: asyncio.Transport, protocol: asyncio.Protocol) -> None:
        self._transport = transport
        self._queue: asyncio.Queue[bytes] = asyncio.Queue()
        lost = protocol.connection_lost

        def connection_lost(exc: Exception | None) -> None:
            self._queue.put_nowait(b"")
            lost(exc)

        protocol.data_received = self._received  # type: ignore[method-assign]
        protocol.connection_lost = connection_lost  # type: ignore[method-assign]

    def _received(self, data: bytes) -> None:
        self._queue.put_nowait(data)
        if self._queue.qsize() > _QUEUED_CHUNKS:
            self._transport.pause_reading()  # resumed as the session catches up

    async def chunks(self) -> AsyncIterator[bytes]:
        while data := await self._queue.get():
            if self._queue.qsize() < _QUEUED_CHUNKS // 2:
                self._transport.resume_reading()
            yield data

    async def send(self, data: bytes) -> None:
        if self._transport.is_closing():
            raise ConnectionError("the client closed the connection")
        self._transport.write(data)
        # A bare transport has no awaitable drain: wait while its buffer is over the mark.
        while self._transport.get_write_buffer_size() > _WRITE_BUFFER:  # noqa: ASYNC110
            await asyncio.sleep(0.005)


async def _spdy_upgrade(
    request: web.Request, node_tunnel: NodeTunnel, pod: dict[str, Any]
) -> web.StreamResponse:
    offered = {
        version.strip()
        for header in request.headers.getall("X-Stream-Protocol-Version", [])
        for version in header.split(",")
    }
    if PORTFORWARD_PROTOCOL not in offered:
        raise status.ApiError(
            403,
            "Forbidden",
            f"unable to upgrade: unable to negotiate protocol: client supports {sorted(offered)},"
            f" server supports [{PORTFORWARD_PROTOCOL}]",
        )
    transport, protocol = request.transport, request.protocol
    if not isinstance(transport, asyncio.Transport):
        raise ConnectionError("the client went away")
    conn = HijackedBytes(transport, protocol)
    transport.write(
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
        b"X-Stream-Protocol-Version: " + PORTFORWARD_PROTOCOL.encode() + b"\r\n\r\n"
    )
    try:
        await SpdyPortForward(conn, node_tunnel, pod).run()
    except (ConnectionError, RuntimeError):
        pass
    finally:
        transport.close()
    return web.Response(status=101)  # not sent: the connection is closed


class SpdyPortForward:
    """A SPDY session, each stream pair forwarded through the node's tunnel."""

    def __init__(self, conn: SessionBytes, node_tunnel: NodeTunnel, pod: dict[str, Any]) -> None:
        self._conn = conn
        self._tunnel = node_tunnel
        self._pod = pod
        self._reader = SpdyReader()
        self._writer = SpdyWriter()
        self._send_lock = asyncio.Lock()
        self._pairs: dict[str, _Pair] = {}
        self._by_stream: dict[int, _Pair] = {}

    async def _send(self, frame: bytes) -> None:
        async with self._send_lock:  # header compression state: one frame at a time, in order
            await self._conn.send(frame)

    async def run(self) -> None:
        try:
            async for data in self._conn.chunks():
                for frame in self._reader.feed(data):
                    await self._handle(frame)
        except SpdyError:
            await self._send(self._writer.goaway())
        finally:
            for pair in list(self._pairs.values()):
                await self._finish(pair)

    async def _handle(self, frame: Any) -> None:
        if frame.kind == "ping":
            await self._send(self._writer.ping(frame.value))
        elif frame.kind == "syn_stream":
            await self._new_stream(frame)
        elif frame.kind == "data":
            pair = self._by_stream.get(frame.stream_id)
            if pair is None or frame.stream_id != pair.data_stream:
                return  # kubectl half-closes its error stream at once: nothing to do
            await self._to_pod(pair, frame.payload, frame.fin)
        elif frame.kind == "rst_stream":
            pair = self._by_stream.get(frame.stream_id)
            if pair is not None:
                await self._finish(pair)
        elif frame.kind == "goaway":
            raise ConnectionError("the client ended the session")

    async def _new_stream(self, frame: Any) -> None:
        async with self._send_lock:
            # A SYN_REPLY answers every stream, as the kubelet's server connection does.
            await self._conn.send(self._writer.syn_reply(frame.stream_id))
        kind = (frame.headers.get("streamtype") or [""])[0]
        request_id = (frame.headers.get("requestid") or [str(frame.stream_id)])[0]
        try:
            port = int((frame.headers.get("port") or ["0"])[0])
        except ValueError:
            port = 0
        pair = self._pairs.setdefault(request_id, _Pair(port))
        self._by_stream[frame.stream_id] = pair
        if kind == "error":
            pair.error_stream = frame.stream_id
        elif kind == "data":
            pair.data_stream = frame.stream_id
        if pair.error_stream and pair.data_stream and pair.task is None:
            pair.task = asyncio.create_task(self._forward(pair))

    async def _to_pod(self, pair: _Pair, data: bytes, fin: bool) -> None:
        if pair.node_stream is None:
            if data:
                pair.pending.append(data)
            pair.half_closed = pair.half_closed or fin
            return
        if data:
            await pair.node_stream.stdin(data)
        if fin:
            await pair.node_stream.close_stdin()

    async def _forward(self, pair: _Pair) -> None:
        try:
            try:
                pair.node_stream = await open_port(self._tunnel, self._pod, pair.port)
            except status.ApiError as err:
                await self._send(self._writer.data(pair.error_stream, err.message.encode()))
                return
            for data in pair.pending:
                await pair.node_stream.stdin(data)
            pair.pending.clear()
            if pair.half_closed:
                await pair.node_stream.close_stdin()
            async for chunk in pair.node_stream.output():
                for start in range(0, len(chunk.payload), _CHUNK):
                    piece = chunk.payload[start : start + _CHUNK]
                    await self._send(self._writer.data(pair.data_stream, piece))
            if pair.node_stream.error:
                message = str(pair.node_stream.error.get("message", "")).encode()
                await self._send(self._writer.data(pair.error_stream, message))
        except (ConnectionError, RuntimeError):
            return
        finally:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self._send(self._writer.data(pair.data_stream, b"", fin=True))
                await self._send(self._writer.data(pair.error_stream, b"", fin=True))

    async def _finish(self, pair: _Pair) -> None:
        for stream_id in (pair.error_stream, pair.data_stream):
            self._by_stream.pop(stream_id, None)
        for key, value in list(self._pairs.items()):
            if value is pair:
                del self._pairs[key]
        if pair.task is not None and pair.task is not asyncio.current_task():
            pair.task.cancel()
        if pair.node_stream is not None:
            await pair.node_stream.close()
