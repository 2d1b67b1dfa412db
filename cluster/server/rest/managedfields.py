"""Field ownership (``metadata.managedFields``) and server-side apply's conflicts.

Every write through the API records which manager set which fields, in kube-apiserver's
``FieldsV1`` form (``f:<field>``, ``k:{"name":…}`` for list items keyed by their merge key,
``v:<value>`` for set-like lists, ``.`` for an item itself). An update (operation ``Update``)
takes the fields whose values it changed from whoever held them. An apply (operation
``Apply``) owns exactly the fields of its configuration; a field another manager owns with a
different value is a conflict, reported as kube-apiserver reports it (409, one cause per field
with the other manager), unless ``force`` takes it over. Fields are walked with the strategic
merge metadata of :mod:`k3py.cluster.api.patch_meta`, which names the list keys. A field an
applier stops applying is removed when no other manager owns it (:func:`released`), else it
keeps its value and loses only that applier's ownership. This is a simplification of the
structured-merge-diff library: list items without a merge key are atomic.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from k3py.cluster.api import status
from k3py.cluster.api.patch_meta import field_meta
from k3py.cluster.api.resources import ResourceInfo

Object = dict[str, Any]
Path = tuple[str, ...]
_IGNORED_TOP = frozenset({"apiVersion", "kind", "status"})
_OWNED_META = ("labels", "annotations", "finalizers", "ownerReferences")


@dataclass(frozen=True)
class Manager:
    """Who writes: the field manager's name and the operation (Update or Apply)."""

    name: str
    operation: str = "Update"
    force: bool = False
    # For an apply to a stored object: the managedFields already computed (conflicts checked).
    entries: list[Object] | None = field(default=None, compare=False, hash=False)


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def _walk(value: Any, type_name: str | None, prefix: Path, out: dict[Path, Any]) -> None:
    if not isinstance(value, dict) or not value:
        out[prefix] = value
        return
    for key, child in value.items():
        meta = field_meta(type_name, key)
        path = (*prefix, f"f:{key}")
        if isinstance(child, list) and meta.merges_lists and child:
            if meta.merge_key and all(
                isinstance(item, dict) and meta.merge_key in item for item in child
            ):
                for item in child:
                    element = (*path, "k:" + _compact({meta.merge_key: item[meta.merge_key]}))
                    out[(*element, ".")] = None
                    _walk(item, meta.type, element, out)
                continue
            if all(not isinstance(item, dict | list) for item in child):
                for item in child:
                    out[(*path, "v:" + _compact(item))] = item
                continue
        _walk(child, meta.type, path, out)


def leaves(obj: Object, kind: str) -> dict[Path, Any]:
    """Every owned field of ``obj`` with its value (metadata: labels, annotations...)."""
    out: dict[Path, Any] = {}
    for key, value in obj.items():
        if key in _IGNORED_TOP:
            continue
        if key == "metadata":
            meta = value if isinstance(value, dict) else {}
            part = {k: meta[k] for k in _OWNED_META if meta.get(k)}
            if part:
                _walk(part, "ObjectMeta", ("f:metadata",), out)
            continue
        _walk({key: value}, kind, (), out)
    return out


def encode(paths: Iterable[Path]) -> Object:
    """Paths as a ``FieldsV1`` tree."""
    tree: Object = {}
    for path in sorted(paths):
        node = tree
        for part in path:
            node = node.setdefault(part, {})
    return tree


def decode(tree: Any, prefix: Path = ()) -> set[Path]:
    found: set[Path] = set()
    if not isinstance(tree, dict):
        return found
    for part, child in tree.items():
        path = (*prefix, part)
        if isinstance(child, dict) and child:
            found |= decode(child, path)
        else:
            found.add(path)
    return found


def _entries(obj: Object) -> list[Object]:
    value = (obj.get("metadata") or {}).get("managedFields")
    return [e for e in value if isinstance(e, dict)] if isinstance(value, list) else []


def _entry(manager: str, operation: str, info: ResourceInfo, now: str, paths: set[Path]) -> Object:
    return {
        "manager": manager,
        "operation": operation,
        "apiVersion": info.api_version,
        "time": now,
        "fieldsType": "FieldsV1",
        "fieldsV1": encode(paths),
    }


def _rebuild(
    entries: list[Object], owned: list[set[Path]], mine: Object | None, changed: set[int]
) -> list[Object]:
    result = []
    for index, (entry, paths) in enumerate(zip(entries, owned, strict=True)):
        if not paths:
            continue
        result.append({**entry, "fieldsV1": encode(paths)} if index in changed else entry)
    if mine is not None:
        result.append(mine)
    return result


def record_update(
    info: ResourceInfo, old: Object | None, new: Object, manager: Manager, now: str
) -> None:
    """Set ``new``'s managedFields after ``manager`` updated ``old`` (None: created) to it."""
    entries = _entries(old) if old is not None else []
    after = leaves(new, info.kind)
    before = leaves(old, info.kind) if old is not None else {}
    changed = {p for p in after.keys() | before.keys() if after.get(p) != before.get(p)}
    if old is not None and not changed:
        new["metadata"]["managedFields"] = entries
        return
    own_index = next(
        (
            i
            for i, e in enumerate(entries)
            if e.get("manager") == manager.name and e.get("operation") == "Update"
        ),
        None,
    )
    owned = [decode(e.get("fieldsV1")) for e in entries]
    touched = set()
    for index, paths in enumerate(owned):
        if index != own_index and paths & changed:
            owned[index] = paths - changed
            touched.add(index)
    mine_paths = (owned[own_index] if own_index is not None else set()) | changed
    mine_paths &= after.keys()
    if own_index is not None:
        owned[own_index] = set()  # replaced by the new entry below
    mine = _entry(manager.name, "Update", info, now, mine_paths) if mine_paths else None
    new["metadata"]["managedFields"] = _rebuild(entries, owned, mine, touched)


def record_apply(
    info: ResourceInfo, live: Object | None, config: Object, manager: Manager, now: str
) -> list[Object]:
    """The managedFields after ``manager`` applies ``config`` to ``live``; 409 on conflicts."""
    entries = _entries(live) if live is not None else []
    applied = leaves(config, info.kind)
    current = leaves(live, info.kind) if live is not None else {}
    owned = [decode(e.get("fieldsV1")) for e in entries]
    conflicts: list[tuple[str, str, Path]] = []
    own_index = None
    for index, (entry, paths) in enumerate(zip(entries, owned, strict=True)):
        if entry.get("manager") == manager.name and entry.get("operation") == "Apply":
            own_index = index
            continue
        for path in sorted(paths & applied.keys()):
            if path[-1] != "." and current.get(path) != applied[path]:
                conflicts.append((str(entry.get("manager")), str(entry.get("apiVersion")), path))
    if conflicts and not manager.force:
        raise _conflict(info, config, conflicts)
    touched = set()
    taken = {path for _, _, path in conflicts}
    for index, paths in enumerate(owned):
        if index != own_index and paths & taken:
            owned[index] = paths - taken
            touched.add(index)
    if own_index is not None:
        if not touched and owned[own_index] == set(applied):
            return entries  # the same configuration again: nothing to write
        owned[own_index] = set()
    return _rebuild(entries, owned, _entry(manager.name, "Apply", info, now, set(applied)), touched)


def released(live: Object, config: Object, manager: Manager, kind: str) -> list[Path]:
    """The fields ``manager`` applied before, leaves out of ``config`` now, and no other manager
    owns: an apply removes them from the object (kube-apiserver's behaviour)."""
    mine: set[Path] = set()
    others: set[Path] = set()
    for entry in _entries(live):
        paths = decode(entry.get("fieldsV1"))
        if entry.get("manager") == manager.name and entry.get("operation") == "Apply":
            mine |= paths
        else:
            others |= paths
    gone = mine - leaves(config, kind).keys()
    # Never remove what holds another manager's field (a list item someone else has set
    # fields of stays, with its other fields).
    return sorted(p for p in gone if not any(o[: len(_base(p))] == _base(p) for o in others))


def _base(path: Path) -> Path:
    return path[:-1] if path[-1:] == (".",) else path


def _matches(item: Any, kind: str, wanted: Any) -> bool:
    if kind == "v":
        return bool(item == wanted)
    return isinstance(item, dict) and all(item.get(k) == v for k, v in wanted.items())


def remove(obj: Object, path: Path) -> None:
    """Remove the field ``path`` names (``f:`` keys, ``k:`` keyed items, ``v:`` set values,
    ``.`` the item itself) from ``obj``; a path that no longer leads anywhere is skipped."""
    parent: Any = obj
    for index, part in enumerate(path):
        kind, _, rest = part.partition(":")
        last = index == len(path) - 1 or path[index + 1] == "."
        if kind == "f" and isinstance(parent, dict) and rest in parent:
            if last:
                del parent[rest]
                return
            parent = parent[rest]
        elif kind in ("k", "v") and isinstance(parent, list):
            wanted = json.loads(rest)
            match = next((i for i, v in enumerate(parent) if _matches(v, kind, wanted)), None)
            if match is None:
                return
            if last:
                del parent[match]
                return
            parent = parent[match]
        else:
            return


def _field_text(path: Path) -> str:
    text = ""
    for part in path:
        kind, _, rest = part.partition(":")
        if kind == "f":
            text += "." + rest
        elif kind in ("k", "v"):
            text += f"[{'=' if kind == 'v' else ''}{rest}]"
    return text


def _conflict(
    info: ResourceInfo, config: Object, conflicts: list[tuple[str, str, Path]]
) -> status.ApiError:
    causes = [
        status.Cause(
            "FieldManagerConflict",
            f'conflict with "{manager}" using {api_version}',
            _field_text(path),
        )
        for manager, api_version, path in conflicts
    ]
    listed = "\n".join(f"- {c.message}: {c.field}" for c in causes)
    count = len(causes)
    message = f"Apply failed with {count} conflict{'s' if count > 1 else ''}: " + (
        f"{causes[0].message}: {causes[0].field}" if count == 1 else "\n" + listed
    )
    name = str((config.get("metadata") or {}).get("name", ""))
    return status.ApiError(
        409,
        "Conflict",
        message,
        causes=causes,
        name=name,
        group=info.group,
        kind=info.plural,
    )


def manager_of(query: Any, user_agent: str, operation: str, force: bool = False) -> Manager:
    """The request's field manager: ``fieldManager``, else the client's name (User-Agent)."""
    name = str(query.get("fieldManager") or "") or user_agent.split("/", 1)[0] or "unknown"
    return Manager(name[:128], operation, force)
