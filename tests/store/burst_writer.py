"""Helper process for the durability test: concurrent writes until killed, acks on stdout.

Run as ``python -m tests.store.burst_writer <database> <normal|full>``. Each line printed is a
key whose create (and then update) the datastore acknowledged; the value is derived from the
key, so the test can tell a whole value from a torn one.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from k3py.cluster.server.store import SQLiteDatastore

WORKERS = 32


def payload(key: str, version: int) -> bytes:
    return (f'{{"key":"{key}","version":{version},"pad":"' + "x" * 900 + '"}').encode()


async def burst(path: Path, sync: str) -> None:
    store = SQLiteDatastore(path, sync="full" if sync == "full" else "normal")
    await store.start()

    async def worker(number: int) -> None:
        for i in range(1_000_000):
            key = f"/registry/configmaps/burst/w{number:02}-{i:06}"
            await store.create(key, payload(key, 1))
            await store.update(key, payload(key, 2))
            sys.stdout.write(f"{key}\n")
            sys.stdout.flush()

    await asyncio.gather(*(worker(n) for n in range(WORKERS)))


if __name__ == "__main__":
    asyncio.run(burst(Path(sys.argv[1]), sys.argv[2]))
