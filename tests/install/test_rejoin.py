"""A reinstalled machine rejoins under its old name once its Node is deleted, as with K3s.

The server keeps a hash of each node's password; a machine reinstalled with a new password is
refused (``tests/security/test_loopback.py``) until ``kubectl delete node`` removes the Node,
which drops the password with it, as K3s deletes the node's password secret.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from k3py.cluster.server.store import MemoryDatastore
from k3py.cluster.server.supervisor import NodePasswords, forget_deleted_nodes


async def test_deleting_the_node_frees_its_name_for_a_new_password(tmp_path: Path) -> None:
    store = MemoryDatastore()
    await store.start()
    passwords = NodePasswords(tmp_path / "node-passwd")
    for node in ("board1", "board2"):
        await store.create(f"/registry/nodes/{node}", b"{}")
        passwords.record(node, f"{node}-first-password")
    task = asyncio.create_task(forget_deleted_nodes(store, passwords))
    try:
        await asyncio.sleep(0.05)  # the watch starts "from now"
        assert passwords.check("board1", "a-reinstalled-password") is False
        await store.delete("/registry/nodes/board1")
        for _ in range(100):
            if passwords.check("board1", "a-reinstalled-password") is None:
                break
            await asyncio.sleep(0.02)
        assert passwords.check("board1", "a-reinstalled-password") is None
        assert passwords.check("board2", "board2-first-password") is True
        assert (tmp_path / "node-passwd").stat().st_mode & 0o777 == 0o600
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await store.close()
