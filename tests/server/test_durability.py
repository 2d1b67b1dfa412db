"""``kill -9`` during a burst of concurrent writes loses no acknowledged write."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest

from tests.server.process import ServerProcess

pytestmark = pytest.mark.integration

CM = "/api/v1/namespaces/default/configmaps"
WRITERS = 16


async def _burst(server: ServerProcess, acknowledged: dict[str, str], stop: asyncio.Event) -> None:
    connector = aiohttp.TCPConnector(ssl=server.ssl_context(), limit=WRITERS)
    async with aiohttp.ClientSession(server.url, connector=connector) as session:

        async def writer(index: int) -> None:
            sequence = 0
            while not stop.is_set():
                name = f"w{index}-{sequence}"
                payload = f"{name}:" + "v" * 200
                body = {"metadata": {"name": name}, "data": {"payload": payload}}
                try:
                    async with session.post(CM, json=body) as response:
                        if response.status == 201:
                            acknowledged[name] = payload
                        elif response.status != 429:
                            raise AssertionError(await response.text())
                except (TimeoutError, aiohttp.ClientError, ConnectionError):
                    return  # the server is gone
                sequence += 1

        await asyncio.gather(*(writer(i) for i in range(WRITERS)))


async def test_kill_9_mid_burst_loses_no_acknowledged_write(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path, "--disable-scheduler")
    server.start()
    acknowledged: dict[str, str] = {}
    stop = asyncio.Event()
    burst = asyncio.create_task(_burst(server, acknowledged, stop))
    try:
        deadline = time.monotonic() + 20
        while len(acknowledged) < 300:
            assert time.monotonic() < deadline, "the burst made no progress"
            await asyncio.sleep(0.05)
        server.kill9()  # mid-burst: writers are still sending
        await asyncio.wait_for(burst, 30)
    finally:
        stop.set()
        if not burst.done():
            burst.cancel()
    assert len(acknowledged) >= 300
    server.start()
    try:
        code, listed = server.request("GET", CM)
        assert code == 200
        assert isinstance(listed, dict)
        stored = {
            item["metadata"]["name"]: item["data"]["payload"]
            for item in listed["items"]
            if item["metadata"]["name"].startswith("w")
        }
        lost = sorted(set(acknowledged) - set(stored))
        assert lost == [], f"{len(lost)} acknowledged writes lost, e.g. {lost[:5]}"
        for name, payload in stored.items():  # nothing half-written
            assert payload == f"{name}:" + "v" * 200
    finally:
        server.stop()
