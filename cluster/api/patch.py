"""The three patch formats of ``PATCH`` requests, applied to a stored object.

* JSON patch (RFC 6902, ``application/json-patch+json``): ``add``, ``remove``, ``replace``,
  ``move``, ``copy`` and ``test`` on JSON pointers (``~0``/``~1`` escapes, ``-`` to append,
  negative indices counted from the end as the API server's library allows).
* JSON merge patch (RFC 7386, ``application/merge-patch+json``).
* Strategic merge patch (``application/strategic-merge-patch+json``), see
  :mod:`k3py.cluster.api.strategic`.

Each function takes the stored object and the decoded patch body, leaves both untouched and
returns the patched object. A patch that cannot be applied raises the ``ApiError`` the API
server would send: 400 for a malformed patch, 422 for a patch that does not apply (a failed
``test``, a missing path), 413 for too many operations. The result is normalised as the API
server's typed decoding would leave it: ``null`` fields and leftover ``$`` directives vanish.
Given a :class:`~k3py.cluster.api.bounded.WorkBudget`, the work is bounded while it is done: a
JSON patch keeps a running upper bound of the result's size and refuses (413) the operation
that would take it past the limit before copying anything, and the deadline (504) is checked
between operations; merge results are measured before they are returned.
"""

from __future__ import annotations

import copy
from typing import Any

from k3py.cluster.api.bounded import WorkBudget, json_size
from k3py.cluster.api.patch_meta import STRUCTS
from k3py.cluster.api.resources import ResourceInfo
from k3py.cluster.api.status import ApiError, Cause, bad_request, unsupported_media_type
from k3py.cluster.api.strategic import StrategicPatchError, strategic_merge

MAX_JSON_PATCH_OPERATIONS = 10000
_REJECTED = "the server rejected our request due to an error in our request"


def apply_json_patch(
    doc: dict[str, Any], ops: Any, budget: WorkBudget | None = None
) -> dict[str, Any]:
    """Apply an RFC 6902 operation list to ``doc``."""
    if not isinstance(ops, list):
        raise bad_request(
            f"json: cannot unmarshal {_json_type(ops)} into Go value of type jsonpatch.Patch"
        )
    if len(ops) > MAX_JSON_PATCH_OPERATIONS:
        raise ApiError(
            413,
            "RequestEntityTooLarge",
            f"The allowed maximum operations in a JSON patch is {MAX_JSON_PATCH_OPERATIONS}, "
            f"got {len(ops)}",
        )
    result: Any = copy.deepcopy(doc)
    size = _Size(result, budget)
    for op in ops:
        if budget is not None:
            budget.check_time()
        if not isinstance(op, dict):
            raise bad_request(
                f"json: cannot unmarshal {_json_type(op)} into Go value of type jsonpatch.Operation"
            )
        try:
            result = _apply_operation(result, op, size)
        except _PatchFailed as exc:
            raise _unprocessable(str(exc)) from None
    if not isinstance(result, dict):
        raise bad_request("the patched object is not a JSON object")
    return _normalize_object(result)


def apply_merge_patch(
    doc: dict[str, Any], patch: Any, budget: WorkBudget | None = None
) -> dict[str, Any]:
    """Apply an RFC 7386 merge patch to ``doc``."""
    if not isinstance(patch, dict):
        raise bad_request("Invalid JSON Patch")
    merged = _merge_patch(copy.deepcopy(doc), patch)
    if budget is not None:
        budget.check_size(merged)
    return _normalize_object(merged)


def apply_strategic_merge_patch(
    doc: dict[str, Any], patch: Any, info: ResourceInfo, budget: WorkBudget | None = None
) -> dict[str, Any]:
    """Apply a strategic merge patch with the patch metadata of ``info``'s kind."""
    if info.kind not in STRUCTS:
        raise unsupported_media_type("application/strategic-merge-patch+json")
    if not isinstance(patch, dict):
        raise bad_request("invalid JSON document")
    try:
        merged = strategic_merge(copy.deepcopy(doc), copy.deepcopy(patch), info.kind)
    except StrategicPatchError as exc:
        if exc.code == 422:
            raise _unprocessable(str(exc)) from None
        raise bad_request(str(exc)) from None
    if not isinstance(merged, dict):
        raise bad_request("the patched object is not a JSON object")
    if budget is not None:
        budget.check_size(merged)
    return _normalize_object(merged)


class _PatchFailed(Exception):
    pass


class _Size:
    """A running upper bound of a JSON patch result's size, kept under the budget's limit.

    Additions are counted as they come; removals are not, so when the bound passes the limit
    the document is measured once more (cheaply: measuring stops past the limit) and only a
    document that really is too large is refused.
    """

    def __init__(self, doc: Any, budget: WorkBudget | None) -> None:
        self.budget = budget
        self.bound = json_size(doc, budget.max_bytes) if budget is not None else 0

    def add(self, value: Any, doc: Any) -> None:
        budget = self.budget
        if budget is None:
            return
        budget.check_time()
        self.bound += json_size(value, budget.max_bytes)
        if self.bound > budget.max_bytes:
            self.bound = json_size(doc, budget.max_bytes) + json_size(value, budget.max_bytes)
            if self.bound > budget.max_bytes:
                raise budget.too_large(self.bound)


def _unprocessable(detail: str) -> ApiError:
    # The API server answers with a generic 422; the detail goes in a cause so that kubectl
    # shows what went wrong.
    return ApiError(422, "Invalid", _REJECTED, causes=[Cause("UnexpectedServerResponse", detail)])


def _apply_operation(doc: Any, op: dict[str, Any], size: _Size) -> Any:
    kind = op.get("op")
    path = op.get("path")
    if not isinstance(kind, str) or kind not in (
        "add",
        "remove",
        "replace",
        "move",
        "copy",
        "test",
    ):
        raise _PatchFailed(f"Unexpected kind: {kind if isinstance(kind, str) else 'unknown'}")
    if not isinstance(path, str):
        raise _PatchFailed(f"{kind} operation does not apply: missing path")
    tokens = _pointer(path)
    if kind in ("add", "replace", "test") and "value" not in op:
        raise _PatchFailed(f"{kind} operation does not apply: missing value")
    if kind in ("add", "replace"):
        size.add(op["value"], doc)
    if kind == "add":
        return _add(doc, tokens, copy.deepcopy(op["value"]), path)
    if kind == "remove":
        _remove(doc, tokens, path)
        return doc
    if kind == "replace":
        if not tokens:
            return copy.deepcopy(op["value"])
        parent, key = _parent(doc, tokens, path, "replace")
        if isinstance(parent, dict):
            if key not in parent:
                raise _PatchFailed(
                    f"replace operation does not apply: doc is missing key: {path}: missing value"
                )
            parent[key] = copy.deepcopy(op["value"])
        else:
            parent[_array_index(parent, key, path, allow_end=False)] = copy.deepcopy(op["value"])
        return doc
    if kind == "test":
        found, current = _get(doc, tokens)
        if not found and op["value"] is None:
            return doc
        if not found or not _json_equal(current, op["value"]):
            raise _PatchFailed(f"testing value {path} failed: test failed")
        return doc
    source = op.get("from")
    if not isinstance(source, str):
        raise _PatchFailed(f"{kind} operation does not apply: missing from path")
    from_tokens = _pointer(source)
    found, value = _get(doc, from_tokens)
    if not found:
        raise _PatchFailed(
            f"{kind} operation does not apply: doc is missing from path: {source}: missing value"
        )
    if kind == "move":
        if path != source and path.startswith(source + "/"):
            raise _PatchFailed(f"move operation does not apply: {source} is a prefix of {path}")
        _remove(doc, from_tokens, source)
        return _add(doc, tokens, value, path)
    size.add(value, doc)  # before copying: a doubling copy is refused before it is made
    return _add(doc, tokens, copy.deepcopy(value), path)


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise _PatchFailed(f'JSON pointer must be empty or start with a "/": {path}')
    return [t.replace("~1", "/").replace("~0", "~") for t in path[1:].split("/")]


def _parent(doc: Any, tokens: list[str], path: str, kind: str) -> tuple[Any, str]:
    found, parent = _get(doc, tokens[:-1])
    if not found or not isinstance(parent, dict | list):
        raise _PatchFailed(
            f"{kind} operation does not apply: doc is missing path: {path}: missing value"
        )
    return parent, tokens[-1]


def _get(doc: Any, tokens: list[str]) -> tuple[bool, Any]:
    current = doc
    for token in tokens:
        if isinstance(current, dict):
            if token not in current:
                return False, None
            current = current[token]
        elif isinstance(current, list):
            try:
                index = _array_index(current, token, "", allow_end=False)
            except _PatchFailed:
                return False, None
            current = current[index]
        else:
            return False, None
    return True, current


def _array_index(array: list[Any], segment: str, path: str, *, allow_end: bool) -> int:
    size = len(array) + (1 if allow_end else 0)
    if segment == "-" and allow_end:
        return len(array)
    if not segment.lstrip("-").isdigit() or segment.startswith("+"):
        raise _PatchFailed(f"Unable to access invalid index: {segment}: invalid index referenced")
    index = int(segment)
    if index < 0:
        index += size
    if not 0 <= index < size:
        raise _PatchFailed(f"Unable to access invalid index: {segment}: invalid index referenced")
    return index


def _add(doc: Any, tokens: list[str], value: Any, path: str) -> Any:
    if not tokens:
        return value
    parent, key = _parent(doc, tokens, path, "add")
    if isinstance(parent, dict):
        parent[key] = value
    else:
        parent.insert(_array_index(parent, key, path, allow_end=True), value)
    return doc


def _remove(doc: Any, tokens: list[str], path: str) -> None:
    if not tokens:
        raise _PatchFailed("remove operation does not apply: cannot remove the whole document")
    parent, key = _parent(doc, tokens, path, "remove")
    if isinstance(parent, dict):
        if key not in parent:
            raise _PatchFailed(f"Unable to remove nonexistent key: {key}: missing value")
        del parent[key]
    else:
        del parent[_array_index(parent, key, path, allow_end=False)]


def _json_equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    return type(a) is type(b) and a == b


def _merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if not isinstance(target, dict):
        target = {}
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        else:
            target[key] = _merge_patch(target.get(key), value)
    return target


def _normalize_object(obj: dict[str, Any]) -> dict[str, Any]:
    normalized: dict[str, Any] = _normalize(obj)
    return normalized


def _normalize(value: Any) -> Any:
    """Drop null fields and directive keys, as a typed decode of the result would."""
    if isinstance(value, dict):
        return {
            k: _normalize(v) for k, v in value.items() if v is not None and not k.startswith("$")
        }
    if isinstance(value, list):
        return [_normalize(v) for v in value]
    return value


def _json_type(value: Any) -> str:
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "bool"
    if value is None:
        return "null"
    return "number"
