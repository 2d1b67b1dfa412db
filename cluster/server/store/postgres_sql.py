"""The SQL of the PostgreSQL datastore: schema, its checks, reads at a revision, writes, compaction.

The log is kine's model in one table, ``k3py_log``: every write is a new row whose ``id`` is the
global revision, ``prev_revision`` points at the key's previous row and ``old_value`` keeps the
value that row replaced. ``k3py_meta`` holds the schema version, the current revision and the
compact revision. Writers of every server serialise on the ``revision`` row of ``k3py_meta``
(``FOR UPDATE`` inside :data:`WRITE_FUNCTION`), so revisions commit in order and any snapshot
sees a gapless prefix of the log; the function also sends ``NOTIFY k3py_log, '<revision>'`` in
the same transaction, delivered to every server's listener at commit. Reads are single
statements that fetch the log state with the rows, so a list and its revision agree without an
explicit transaction. Keys use the "C" collation: byte order, as SQLite sorts them.
"""

# Statements are joined from constant fragments only; every value is a bind parameter.
# ruff: noqa: S608

from __future__ import annotations

from typing import Any

from k3py.cluster.server.store.model import (
    Compacted,
    Event,
    FutureRevision,
    KeyValue,
    StoreError,
    prefix_upper_bound,
)

SCHEMA_VERSION = 1
CHANNEL = "k3py_log"
# pg_advisory locks: one creates the schema, one compacts (per database, across servers).
SCHEMA_LOCK = 0x6B33_7079_0001
COMPACT_LOCK = 0x6B33_7079_0002
OUR_TABLES = frozenset({"k3py_log", "k3py_meta"})

SCHEMA = """
CREATE TABLE IF NOT EXISTS k3py_meta (name text PRIMARY KEY, value bigint NOT NULL);
CREATE TABLE IF NOT EXISTS k3py_log (
    id bigint PRIMARY KEY,
    name text COLLATE "C" NOT NULL,
    created boolean NOT NULL,
    deleted boolean NOT NULL,
    create_revision bigint NOT NULL,
    prev_revision bigint NOT NULL,
    value bytea NOT NULL,
    old_value bytea
);
CREATE UNIQUE INDEX IF NOT EXISTS k3py_log_name_id ON k3py_log (name, id DESC);
INSERT INTO k3py_meta (name, value) VALUES ('revision', 0), ('compact_revision', 0)
    ON CONFLICT (name) DO NOTHING;
"""

# One batch of writes in one statement (one round trip, one transaction when called outside an
# explicit one). Each input row yields one output row: ok (the new revision), or why it was
# refused (exists, missing, conflict) with the key's current row. Refused writes take no revision.
WRITE_FUNCTION = """
CREATE OR REPLACE FUNCTION k3py_write(
    p_kinds text[], p_names text[], p_values bytea[], p_expected bigint[]
) RETURNS TABLE (
    o_status text, o_revision bigint, o_create_revision bigint, o_prev_revision bigint,
    o_value bytea
) LANGUAGE plpgsql AS $fn$
DECLARE
    v_rev bigint;
    v_start bigint;
    v_id bigint;
    v_create bigint;
    v_deleted boolean;
    v_value bytea;
    v_live boolean;
BEGIN
    SELECT m.value INTO v_rev FROM k3py_meta m WHERE m.name = 'revision' FOR UPDATE;
    v_start := v_rev;
    FOR i IN 1 .. coalesce(array_length(p_kinds, 1), 0) LOOP
        SELECT l.id, l.create_revision, l.deleted, l.value
            INTO v_id, v_create, v_deleted, v_value
            FROM k3py_log l WHERE l.name = p_names[i] ORDER BY l.id DESC LIMIT 1;
        v_live := FOUND AND NOT v_deleted;
        IF p_kinds[i] = 'create' THEN
            IF v_live THEN
                RETURN QUERY SELECT 'exists'::text, v_id, v_create, 0::bigint, v_value;
                CONTINUE;
            END IF;
            v_rev := v_rev + 1;
            INSERT INTO k3py_log VALUES
                (v_rev, p_names[i], true, false, v_rev, coalesce(v_id, 0), p_values[i], NULL);
            RETURN QUERY SELECT 'ok'::text, v_rev, v_rev, coalesce(v_id, 0), NULL::bytea;
        ELSE
            IF NOT v_live THEN
                RETURN QUERY SELECT 'missing'::text, 0::bigint, 0::bigint, 0::bigint, NULL::bytea;
                CONTINUE;
            END IF;
            IF p_expected[i] <> 0 AND p_expected[i] <> v_id THEN
                RETURN QUERY SELECT 'conflict'::text, v_id, v_create, 0::bigint, v_value;
                CONTINUE;
            END IF;
            v_rev := v_rev + 1;
            INSERT INTO k3py_log VALUES (
                v_rev, p_names[i], false, p_kinds[i] = 'delete', v_create, v_id,
                CASE WHEN p_kinds[i] = 'delete' THEN v_value ELSE p_values[i] END, v_value
            );
            RETURN QUERY SELECT 'ok'::text, v_rev, v_create, v_id, v_value;
        END IF;
    END LOOP;
    IF v_rev > v_start THEN
        UPDATE k3py_meta SET value = v_rev WHERE name = 'revision';
        PERFORM pg_notify('k3py_log', v_rev::text);
    END IF;
END
$fn$;
"""

WRITE = "SELECT * FROM k3py_write($1::text[], $2::text[], $3::bytea[], $4::bigint[])"

# The log state as a derived table; joined LATERAL with the rows so both come from one snapshot.
_STATE = (
    "(SELECT (SELECT value FROM k3py_meta WHERE name = 'revision') AS cur,"
    " (SELECT value FROM k3py_meta WHERE name = 'compact_revision') AS comp) s"
)
# $1 the revision asked for (0: current); the effective revision is "at".
_AT = "CASE WHEN $1::bigint = 0 THEN s.cur ELSE $1::bigint END"


def _range(first: int, bounded: bool) -> str:
    """``name`` within a prefix: parameters $first (lower) and, when bounded, $first+1."""
    condition = f"name >= ${first}::text"
    if bounded:
        condition += f" AND name < ${first + 1}::text"
    return condition


STATE = "SELECT cur, comp FROM " + _STATE

GET = (
    "SELECT s.cur, s.comp, l.id, l.create_revision, l.deleted, l.value FROM " + _STATE + " LEFT"
    " JOIN LATERAL (SELECT id, create_revision, deleted, value FROM k3py_log"
    f" WHERE name = $2::text AND id <= {_AT} ORDER BY id DESC LIMIT 1) l ON true"
)


def list_sql(bounded: bool) -> str:
    """Live keys at a revision by key: $1 revision, $2 start_after, $3 limit (0: all), $4.."""
    return (
        "SELECT s.cur, s.comp, l.id, l.name, l.create_revision, l.value FROM " + _STATE + " LEFT"
        " JOIN LATERAL (SELECT * FROM (SELECT DISTINCT ON (name) id, name, create_revision,"
        f" deleted, value FROM k3py_log WHERE {_range(4, bounded)} AND name > $2::text"
        f" AND id <= {_AT} ORDER BY name, id DESC) latest WHERE NOT deleted ORDER BY name"
        " LIMIT CASE WHEN $3::bigint > 0 THEN $3::bigint END) l ON true"
    )


def count_sql(bounded: bool) -> str:
    return (
        "SELECT count(*) FROM (SELECT DISTINCT ON (name) deleted FROM k3py_log"
        f" WHERE {_range(1, bounded)} ORDER BY name, id DESC) latest WHERE NOT deleted"
    )


def events_sql(bounded: bool) -> str:
    """Events ``$1 < revision <= $2`` under a prefix ($4..), oldest first, at most $3."""
    return (
        "SELECT s.cur, s.comp, l.* FROM " + _STATE + " LEFT JOIN LATERAL (SELECT id, name,"
        " created, deleted, create_revision, prev_revision, value, old_value FROM k3py_log"
        f" WHERE id > $1::bigint AND id <= $2::bigint AND {_range(4, bounded)}"
        " ORDER BY id LIMIT $3::bigint) l ON true"
    )


COMPACT_STEP = (
    "DELETE FROM k3py_log WHERE id IN (SELECT prev_revision FROM k3py_log"
    " WHERE id > $1::bigint AND id <= $2::bigint AND prev_revision > 0)",
    "DELETE FROM k3py_log WHERE id > $1::bigint AND id <= $2::bigint AND deleted",
)
SET_COMPACT = "UPDATE k3py_meta SET value = $1::bigint WHERE name = 'compact_revision'"

TABLES = (
    "SELECT table_name FROM information_schema.tables"
    " WHERE table_schema = current_schema() ORDER BY table_name"
)


def prefix_args(prefix: str) -> tuple[bool, list[str]]:
    """Whether the prefix range has an upper bound, and the bound parameters."""
    upper = prefix_upper_bound(prefix)
    return (True, [prefix, upper]) if upper is not None else (False, [prefix])


def check_schema(tables: list[str], version: int | None, database: str) -> None:
    """Refuse a database of another program or of a newer k3py, in one line."""
    foreign = [name for name in tables if name not in OUR_TABLES]
    if foreign:
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise StoreError(
            f"database {database!r} holds tables of another program ({shown}); give k3py a"
            " database of its own (CREATE DATABASE k3py OWNER <user>)"
        )
    if version is not None and version > SCHEMA_VERSION:
        raise StoreError(
            f"database {database!r} was written by a newer k3py (schema {version}, this one"
            f" knows {SCHEMA_VERSION}); upgrade k3py on this server"
        )


def checked_revision(revision: int, current: int, compacted: int) -> int:
    """The revision to read at (0: current); raises for compacted or future revisions."""
    if revision == 0:
        return current
    if revision < compacted:
        raise Compacted(revision, compact_revision=compacted, current_revision=current)
    if revision > current:
        raise FutureRevision(revision, current_revision=current)
    return revision


def event_of(row: Any) -> Event:
    """An :class:`Event` from a log row (as selected by :func:`events_sql`)."""
    key: str = row["name"]
    revision: int = row["id"]
    kv = KeyValue(key, bytes(row["value"]), row["create_revision"], revision)
    if row["created"]:
        return Event("create", kv, None)
    old = row["old_value"]
    prev = KeyValue(
        key, bytes(old) if old is not None else b"", row["create_revision"], row["prev_revision"]
    )
    return Event("delete" if row["deleted"] else "update", kv, prev)
