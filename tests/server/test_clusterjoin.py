"""Servers joining one cluster through a shared datastore: sealed CA and token, wrong tokens."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from k3py.cluster.server import pki, token
from k3py.cluster.server.clusterjoin import (
    BOOTSTRAP_KEY,
    JoinError,
    is_shared,
    join_or_publish,
    seal,
    unseal,
)
from k3py.cluster.server.store import MemoryDatastore


def _creator(data_dir: Path, given: str | None) -> Callable[[], None]:
    def create_local() -> None:
        ca = pki.ensure_pki(data_dir, [], hostname="server", addresses=["192.0.2.10"])
        token.ensure_server_token(data_dir, ca.ca_bundle(), given)

    return create_local


async def _join(store: MemoryDatastore, data_dir: Path, given: str | None) -> str:
    return await join_or_publish(store, data_dir, given, create_local=_creator(data_dir, given))


def test_sealed_files_open_only_with_the_same_secret() -> None:
    files = {"tls/server-ca.key": b"key", "token": b"K10abc::server:s"}
    record = seal(files, "right")
    assert b"key" not in record
    assert unseal(record, "right") == files
    with pytest.raises(JoinError, match="--token does not match the cluster"):
        unseal(record, "wrong")


async def test_the_second_server_loads_the_first_servers_ca_and_token(tmp_path: Path) -> None:
    store = MemoryDatastore()
    await store.start()
    try:
        assert await _join(store, tmp_path / "one", "cluster-secret") == "created"
        assert await _join(store, tmp_path / "two", "cluster-secret") == "joined"
        for name in ("tls/server-ca.crt", "tls/server-ca.key", "token"):
            first = (tmp_path / "one" / "server" / name).read_bytes()
            assert (tmp_path / "two" / "server" / name).read_bytes() == first
        # The joined server issues its own serving certificate from the shared CA.
        joined = pki.ensure_pki(tmp_path / "two", [], hostname="two", addresses=["192.0.2.11"])
        assert (
            joined.ca_bundle()
            == (tmp_path / "one" / "server" / "tls" / "server-ca.crt").read_bytes()
        )
        # A full K10 token of the cluster works as well as its bare secret.
        full = (tmp_path / "one" / "server" / "token").read_text().strip()
        assert await _join(store, tmp_path / "three", full) == "joined"
    finally:
        await store.close()


async def test_a_wrong_or_missing_token_changes_nothing(tmp_path: Path) -> None:
    store = MemoryDatastore()
    await store.start()
    try:
        await _join(store, tmp_path / "one", "cluster-secret")
        stored = await store.get(BOOTSTRAP_KEY)
        with pytest.raises(JoinError, match="--token does not match"):
            await _join(store, tmp_path / "intruder", "guess")
        with pytest.raises(JoinError, match="already holds a cluster: start this server with"):
            await _join(store, tmp_path / "tokenless", None)
        assert not (tmp_path / "intruder").exists()
        assert not (tmp_path / "tokenless").exists()
        assert await store.get(BOOTSTRAP_KEY) == stored
    finally:
        await store.close()


def test_only_postgres_endpoints_are_shared() -> None:
    assert is_shared("postgres://k3py:pw@db:5432/k3py")
    assert is_shared("postgresql://db/k3py")
    assert not is_shared(None)
    assert not is_shared("sqlite:///var/lib/k3py/state.db")
