"""Choosing a datastore from ``--datastore-endpoint``, as K3s does with kine's endpoints.

No endpoint (or ``sqlite://``) means the embedded SQLite file under the data directory;
``sqlite://<path>`` names another file; ``memory://`` keeps everything in process memory (for
tests and throwaway servers). ``postgres://user:password@host:5432/database?sslmode=…`` is a
PostgreSQL database that several servers share.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from k3py.cluster.server.store.compaction import Retention
from k3py.cluster.server.store.memory import MemoryDatastore
from k3py.cluster.server.store.model import Datastore, StoreError
from k3py.cluster.server.store.sqlite import SQLiteDatastore

logger = logging.getLogger(__name__)

DEFAULT_DB = Path("server", "db", "state.db")


def redact_endpoint(endpoint: str) -> str:
    """The endpoint as logs and messages may show it: without a password or options."""
    parts = urlsplit(endpoint)
    if not parts.netloc:
        return endpoint
    host = parts.hostname or "localhost"
    port = f":{parts.port}" if parts.port else ""
    user = f"{parts.username}@" if parts.username else ""
    return f"{parts.scheme}://{user}{host}{port}{parts.path}"


def open_datastore(
    endpoint: str | None,
    data_dir: Path,
    *,
    sync: Literal["normal", "full"] = "normal",
    retention: Retention | None = None,
    cluster_existed: bool = False,
    reset: bool = False,
) -> Datastore:
    """Build (not start) the datastore an endpoint names; call ``start()`` on the result.

    ``cluster_existed`` (the cluster's PKI predates this start) makes an embedded database
    that is missing or empty a refusal, unless ``reset`` (``--cluster-reset``) says to start
    an empty cluster."""
    if sync not in ("normal", "full"):
        raise StoreError(f"--datastore-sync must be 'normal' or 'full', got {sync!r}")
    if not endpoint:
        return SQLiteDatastore(
            data_dir / DEFAULT_DB,
            sync=sync,
            retention=retention,
            cluster_existed=cluster_existed,
            reset=reset,
        )
    scheme, sep, rest = endpoint.partition("://")
    if not sep:
        raise StoreError(
            f"datastore endpoint {endpoint!r} has no scheme; use sqlite://<path> or leave it"
            " empty for the embedded database"
        )
    scheme = scheme.lower()
    if scheme == "sqlite":
        path, _, query = rest.partition("?")
        if query:
            # kine's SQLite endpoints carry driver options; WAL and sync are ours to choose.
            logger.warning(
                "ignoring sqlite endpoint options; use --datastore-sync instead",
                extra={"fields": {"options": query}},
            )
        db = Path(path) if path else data_dir / DEFAULT_DB
        return SQLiteDatastore(
            db, sync=sync, retention=retention, cluster_existed=cluster_existed, reset=reset
        )
    if scheme == "memory":
        return MemoryDatastore(retention=retention)
    if scheme in ("postgres", "postgresql"):
        # Imported here: asyncpg loads only on servers that use PostgreSQL.
        from k3py.cluster.server.store.postgres import PostgresDatastore

        if not rest.split("?", 1)[0].strip("/"):
            raise StoreError(
                f"datastore endpoint {endpoint!r} names no host; use"
                " postgres://user:password@host:5432/database?sslmode=require"
            )
        return PostgresDatastore(endpoint, retention=retention)
    raise StoreError(
        f"unsupported datastore endpoint scheme {scheme!r}; use sqlite://<path>,"
        " postgres://user:password@host:5432/database, or leave --datastore-endpoint empty"
    )
