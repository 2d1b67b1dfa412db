"""The agent tunnel bounds what a node can make the server buffer: frames over 1 MiB close
the tunnel (websocket code 1009) instead of being held in memory; agents split large output."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from k3py.cluster.api.tunnel import MAX_FRAME, PROTOCOL, encode_data
from k3py.cluster.server import supervisor
from k3py.cluster.server.app import create_app
from k3py.cluster.server.auth import UserInfo
from k3py.cluster.server.pki import ensure_pki
from k3py.cluster.server.store import MemoryDatastore
from k3py.cluster.server.token import ensure_server_token
from tests.server.conftest import ADMIN, TokenAuthenticator, serving, settings_for

NODE = UserInfo("system:node:n1", ("system:nodes", "system:authenticated"))


async def test_a_frame_over_the_limit_closes_the_tunnel(tmp_path: Path) -> None:
    pki = ensure_pki(tmp_path / "data", [], hostname="board1", addresses=())
    token = ensure_server_token(tmp_path / "data", pki.ca_bundle(), None)
    users = {"admin": ADMIN, "node": NODE}
    app = create_app(settings_for(tmp_path), MemoryDatastore(), TokenAuthenticator(users))
    supervisor.add_routes(app, pki, token)
    async with serving(app) as api:
        headers = {"Authorization": "Bearer node"}
        async with api.client.ws_connect(
            supervisor.CONNECT_PATH, protocols=(PROTOCOL,), headers=headers
        ) as ws:
            await ws.send_bytes(encode_data(1, 1, b"x" * 1000))  # a normal frame is fine
            await ws.send_bytes(encode_data(1, 1, b"x" * (MAX_FRAME + 1)))
            message = await ws.receive(timeout=10)
            assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
            assert ws.close_code == aiohttp.WSCloseCode.MESSAGE_TOO_BIG


async def test_the_agent_splits_large_output_into_frames_under_the_limit() -> None:
    from k3py.cluster.agent.tunnel.client import StreamChannel
    from k3py.cluster.api.tunnel import decode_data

    frames: list[bytes] = []

    async def send(frame: str | bytes) -> None:
        assert isinstance(frame, bytes)
        frames.append(frame)

    channel = StreamChannel(send, 7)
    output = bytes(range(256)) * (12 * 1024)  # 3 MiB
    await channel.output(1, output)
    assert all(len(frame) <= MAX_FRAME for frame in frames)
    assert b"".join(decode_data(frame).payload for frame in frames) == output
