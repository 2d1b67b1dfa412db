"""The tunnel client: one websocket to ``/v1-k3py/connect``, kept open, reconnecting.

The agent dials out (boards behind NAT need no inbound port) with its node certificate and
serves the streams the server opens over it (:mod:`.streams`): one task per stream, fed with
the stdin, resize and close messages addressed to it. When the connection drops, every stream
ends and the client reconnects with exponential back-off (1 s doubling to 30 s, with jitter);
the pods are not affected. The frame format is :mod:`k3py.cluster.api.tunnel`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

from k3py.cluster.api import tunnel
from k3py.cluster.client.clock import Clock
from k3py.shutdown import cancel_and_wait

logger = logging.getLogger("k3py.agent.tunnel")

INITIAL_BACKOFF = 1.0
MAX_BACKOFF = 30.0
INBOX = 64


class StreamChannel:
    """One stream as its handler sees it: send output and control, receive input."""

    def __init__(self, send: Callable[[str | bytes], Awaitable[None]], stream_id: int) -> None:
        self._send = send
        self.id = stream_id
        self.inbox: asyncio.Queue[dict[str, Any] | bytes] = asyncio.Queue(INBOX)

    async def output(self, channel: int, payload: bytes) -> None:
        # The server refuses frames over tunnel.MAX_FRAME: large output goes in pieces.
        for start in range(0, max(len(payload), 1), tunnel.MAX_PAYLOAD):
            piece = payload[start : start + tunnel.MAX_PAYLOAD]
            await self._send(tunnel.encode_data(self.id, channel, piece))

    async def control(self, op: str, **fields: Any) -> None:
        await self._send(tunnel.encode_control(op, self.id, **fields))


StreamHandler = Callable[[str, dict[str, Any], StreamChannel], Awaitable[None]]


class TunnelClient:
    def __init__(
        self,
        url: str,
        ssl_context: ssl.SSLContext | None,
        handler: StreamHandler,
        clock: Clock,
    ) -> None:
        self._url = url
        self._ssl = ssl_context
        self._handler = handler
        self._clock = clock
        self.connected = asyncio.Event()
        self.connections = 0

    async def run(self) -> None:
        import aiohttp

        backoff = INITIAL_BACKOFF
        connector = aiohttp.TCPConnector(ssl=self._ssl if self._ssl is not None else False)
        async with aiohttp.ClientSession(connector=connector) as session:
            while True:
                try:
                    async with session.ws_connect(
                        self._url,
                        protocols=(tunnel.PROTOCOL,),
                        heartbeat=30.0,
                        max_msg_size=0,
                        timeout=aiohttp.ClientWSTimeout(ws_close=10.0),
                    ) as ws:
                        self.connections += 1
                        self.connected.set()
                        logger.info("tunnel connected", extra={"fields": {"url": self._url}})
                        backoff = INITIAL_BACKOFF
                        await self._serve(ws)
                        logger.info("tunnel closed by the server")
                except (aiohttp.ClientError, OSError, TimeoutError) as err:
                    logger.debug("tunnel connect failed", extra={"fields": {"error": str(err)}})
                finally:
                    self.connected.clear()
                await self._clock.sleep(backoff * random.uniform(0.8, 1.2))  # noqa: S311
                backoff = min(backoff * 2, MAX_BACKOFF)

    async def _serve(self, ws: Any) -> None:
        import aiohttp

        lock = asyncio.Lock()
        streams: dict[int, tuple[StreamChannel, asyncio.Task[None]]] = {}

        async def send(frame: str | bytes) -> None:
            async with lock:
                if isinstance(frame, bytes):
                    await ws.send_bytes(frame)
                else:
                    await ws.send_str(frame)

        def open_stream(message: dict[str, Any]) -> None:
            channel = StreamChannel(send, message["stream"])
            kind = str(message.get("kind", ""))
            params = message.get("params") or {}
            task = asyncio.create_task(self._run_stream(kind, params, channel))
            streams[channel.id] = (channel, task)
            task.add_done_callback(lambda _: streams.pop(channel.id, None))

        try:
            async for message in ws:
                if message.type == aiohttp.WSMsgType.TEXT:
                    try:
                        control = tunnel.decode_control(message.data)
                    except tunnel.TunnelProtocolError:
                        continue
                    if control["op"] == "open":
                        open_stream(control)
                        continue
                    entry = streams.get(control["stream"])
                    if entry is None:
                        continue
                    if control["op"] == "close":
                        entry[1].cancel()
                    else:
                        await entry[0].inbox.put(control)
                elif message.type == aiohttp.WSMsgType.BINARY:
                    try:
                        data = tunnel.decode_data(message.data)
                    except tunnel.TunnelProtocolError:
                        continue
                    entry = streams.get(data.stream)
                    if entry is not None:
                        await entry[0].inbox.put(data.payload)
                elif message.type in (aiohttp.WSMsgType.ERROR, aiohttp.WSMsgType.CLOSED):
                    break
        finally:
            await cancel_and_wait(*(task for _, task in streams.values()), log=logger)

    async def _run_stream(self, kind: str, params: dict[str, Any], channel: StreamChannel) -> None:
        try:
            await self._handler(kind, params, channel)
        except asyncio.CancelledError:
            raise
        except Exception as err:
            logger.warning(
                "tunnel stream failed", extra={"fields": {"kind": kind, "error": str(err)}}
            )
            with contextlib.suppress(Exception):
                status = {"code": 500, "reason": "InternalError", "message": str(err)}
                await channel.control("error", status=status)
        finally:
            with contextlib.suppress(Exception):
                await channel.control("end")
