"""The datastore's vocabulary: revisioned key-values, watch events, errors and the interfaces.

The datastore is a revisioned key-value log in kine's model. Every write (create, update,
delete) gets the next global revision; an object's ``resourceVersion`` is the ``mod_revision``
of its key. This module holds only data types and :class:`typing.Protocol` definitions, so the
API server, the SQLite backend and the in-memory fake all speak the same words.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal, Protocol

from k3py.errors import K3pyError

EventType = Literal["create", "update", "delete"]


@dataclass(frozen=True, slots=True)
class KeyValue:
    """One key at one revision. ``mod_revision`` is the object's resourceVersion."""

    key: str
    value: bytes
    create_revision: int
    mod_revision: int


@dataclass(frozen=True, slots=True)
class Event:
    """One change. For a delete, ``kv`` carries the last value with the delete's revision."""

    type: EventType
    kv: KeyValue
    prev: KeyValue | None


@dataclass(frozen=True, slots=True)
class ListResult:
    """Live keys under a prefix, sorted by key, as of ``revision``."""

    items: list[KeyValue]
    revision: int
    more: bool


@dataclass(frozen=True, slots=True)
class StoreStats:
    """Counters of the write path; ``transactions < writes`` shows that commits are shared."""

    writes: int
    transactions: int


class StoreError(K3pyError):
    """A datastore operation failed; the message says what and what to do."""


class KeyExists(StoreError):
    """A create found the key already present."""

    def __init__(self, key: str, *, current: KeyValue | None = None) -> None:
        super().__init__(f"{key} already exists")
        self.key = key
        self.current = current


class NotFound(StoreError):
    """The key does not exist (or no longer exists)."""

    def __init__(self, key: str) -> None:
        super().__init__(f"{key} not found")
        self.key = key


class Conflict(StoreError):
    """A conditional write expected a revision the key no longer (or never) had."""

    def __init__(self, key: str, *, expected_revision: int, current: KeyValue | None) -> None:
        actual = current.mod_revision if current is not None else "none (deleted)"
        super().__init__(
            f"{key} was modified: expected revision {expected_revision}, current is {actual};"
            " read the object again and retry"
        )
        self.key = key
        self.expected_revision = expected_revision
        self.current = current


class Compacted(StoreError):
    """The requested revision is older than the compacted one: list again from the latest."""

    def __init__(self, revision: int, *, compact_revision: int, current_revision: int) -> None:
        super().__init__(
            f"revision {revision} has been compacted (oldest available {compact_revision},"
            f" current {current_revision}); list again without a revision"
        )
        self.revision = revision
        self.compact_revision = compact_revision
        self.current_revision = current_revision


class FutureRevision(StoreError):
    """A read asked for a revision the datastore has not reached yet."""

    def __init__(self, revision: int, *, current_revision: int) -> None:
        super().__init__(
            f"revision {revision} is newer than the current revision {current_revision};"
            " retry later or read without a revision"
        )
        self.revision = revision
        self.current_revision = current_revision


class Unavailable(StoreError):
    """The datastore cannot be reached right now (a shared database restarting): retry shortly.

    A write that fails with it may or may not have been applied; none that was acknowledged is
    lost. The API answers 503 with Retry-After.
    """

    retry_after_seconds = 1


class WatchExpired(StoreError):
    """A watcher fell too far behind and was cut off; it must list and watch again."""


class Watch(Protocol):
    """A stream of event batches in revision order; ends when closed."""

    def __aiter__(self) -> AsyncIterator[list[Event]]: ...

    def close(self) -> None: ...


class Datastore(Protocol):
    """A revisioned key-value log with watch and compaction (kine's model).

    ``revision=0`` means "latest" for reads and "from now" for watches. Reads and watches at a
    revision older than :attr:`compact_revision` raise :class:`Compacted`.
    """

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    @property
    def current_revision(self) -> int: ...

    @property
    def compact_revision(self) -> int: ...

    async def get(self, key: str, *, revision: int = 0) -> KeyValue | None: ...

    async def list(
        self, prefix: str, *, revision: int = 0, start_after: str = "", limit: int = 0
    ) -> ListResult: ...

    async def count(self, prefix: str) -> int: ...

    async def create(self, key: str, value: bytes) -> KeyValue: ...

    async def update(self, key: str, value: bytes, *, expected_revision: int = 0) -> KeyValue: ...

    async def delete(self, key: str, *, expected_revision: int = 0) -> KeyValue: ...

    def watch(self, prefix: str, *, revision: int) -> Watch: ...

    async def compact(self) -> int: ...


def prefix_upper_bound(prefix: str) -> str | None:
    """The smallest string greater than every string starting with ``prefix`` (None: no bound).

    Lets a prefix scan use an index range (``key >= prefix AND key < bound``).
    """
    chars = prefix.rstrip(chr(0x10FFFF))
    if not chars:
        return None
    following = ord(chars[-1]) + 1
    if 0xD800 <= following <= 0xDFFF:  # surrogates cannot be encoded; skip to the next scalar
        following = 0xE000
    return chars[:-1] + chr(following)
