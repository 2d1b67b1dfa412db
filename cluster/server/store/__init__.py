"""The datastore: a revisioned key-value log in kine's model, on SQLite, PostgreSQL or in memory.

Every write gets the next global revision (an object's resourceVersion); reads and lists can be
served at a past revision; watches stream changes from a revision; compaction forgets old
revisions, and asking for them raises :class:`Compacted` (410 Gone at the API). Open one with
:func:`open_datastore`; tests of other code use :class:`MemoryDatastore`.
"""

from k3py.cluster.server.store.compaction import Retention
from k3py.cluster.server.store.endpoint import open_datastore
from k3py.cluster.server.store.memory import MemoryDatastore
from k3py.cluster.server.store.model import (
    Compacted,
    Conflict,
    Datastore,
    Event,
    FutureRevision,
    KeyExists,
    KeyValue,
    ListResult,
    NotFound,
    StoreError,
    StoreStats,
    Unavailable,
    Watch,
    WatchExpired,
)
from k3py.cluster.server.store.sqlite import SQLiteDatastore

__all__ = [
    "Compacted",
    "Conflict",
    "Datastore",
    "Event",
    "FutureRevision",
    "KeyExists",
    "KeyValue",
    "ListResult",
    "MemoryDatastore",
    "NotFound",
    "Retention",
    "SQLiteDatastore",
    "StoreError",
    "StoreStats",
    "Unavailable",
    "Watch",
    "WatchExpired",
    "open_datastore",
]
