"""The strategic merge patch engine (``application/strategic-merge-patch+json``).

It merges a patch into a document the way apimachinery's ``strategicpatch`` package does for
the API server: maps merge key by key, ``null`` deletes, lists follow the field's patch
strategy from :mod:`k3py.cluster.api.patch_meta` (merge by key, merge as a set, or replace),
and the directives ``$patch`` (replace, delete), ``$retainKeys``,
``$deleteFromPrimitiveList/<field>`` and ``$setElementOrder/<field>`` do what kubectl expects.
List order follows the same rules too (patch order first, server-only items interleaved by
their live order), so a patch of a container list lands where ``kubectl apply`` puts it.
"""

from __future__ import annotations

from typing import Any

from k3py.cluster.api.patch_meta import FieldMeta, field_meta

DIRECTIVE = "$patch"
RETAIN_KEYS = "$retainKeys"
DELETE_FROM_PRIMITIVE_LIST = "$deleteFromPrimitiveList"
SET_ELEMENT_ORDER = "$setElementOrder"

ERR_BAD_JSON_DOC = "invalid JSON document"
ERR_NO_LIST_OF_LISTS = "lists of lists are not supported"
ERR_PRIMITIVE_LIST = "invalid patch format of primitive list"
ERR_RETAIN_KEYS = "invalid patch format of retainKeys"
ERR_SET_ELEMENT_ORDER = "invalid patch format of setElementOrder list"


class StrategicPatchError(Exception):
    """A patch the engine cannot apply; ``code`` is the HTTP status the API server uses."""

    def __init__(self, message: str, code: int = 400) -> None:
        super().__init__(message)
        self.code = code


def strategic_merge(original: dict[str, Any], patch: dict[str, Any], type_name: str) -> Any:
    """Merge ``patch`` into ``original`` (both are consumed) for a document of ``type_name``."""
    return _merge_map(original, patch, type_name)


def _merge_map(
    original: dict[str, Any] | None, patch: dict[str, Any], type_name: str | None
) -> Any:
    if DIRECTIVE in patch:
        directive = patch[DIRECTIVE]
        if directive == "replace":
            del patch[DIRECTIVE]
            return patch
        if directive == "delete":
            return {}
        raise StrategicPatchError(f"unknown patch type: {directive} in map: {_go_map(patch)}")
    if original is None:
        original = {}
    _apply_retain_keys(original, patch)
    _merge_ordered_lists(original, patch, type_name)
    for patch_key in list(patch):
        value = patch[patch_key]
        key = patch_key
        is_delete_list = False
        if patch_key.startswith(DELETE_FROM_PRIMITIVE_LIST):
            key = _extract_key(patch_key, DELETE_FROM_PRIMITIVE_LIST, ERR_PRIMITIVE_LIST)
            is_delete_list = True
        if value is None:
            original.pop(key, None)
            continue
        if key not in original or _shape(original[key]) != _shape(value):
            if not is_delete_list:
                original[key] = _discard_nulls(value)
            continue
        meta = field_meta(type_name, key)
        current = original[key]
        if isinstance(current, dict):
            original[key] = value if meta.replaces else _merge_map(current, value, meta.type)
        elif isinstance(current, list):
            original[key] = _merge_list_field(current, value, meta, is_delete_list)
        else:
            original[key] = value
    return original


def _merge_list_field(
    original: list[Any], patch: list[Any], meta: FieldMeta, is_delete_list: bool
) -> list[Any]:
    if meta.merges_lists or is_delete_list:
        return _merge_list(original, patch, meta, is_delete_list)
    return patch


def _merge_list(
    original: list[Any], patch: list[Any], meta: FieldMeta, is_delete_list: bool
) -> list[Any]:
    if not original and not patch:
        return original
    kind = _element_shape(original, patch)
    merge_key = meta.merge_key
    if kind != "map":
        if is_delete_list:
            return [item for item in original if not any(_same(item, p) for p in patch)]
        merged = _dedup(original + patch)
        server_order = original
    else:
        if not merge_key:
            raise StrategicPatchError("cannot merge lists without merge key for type map")
        original, patch = _apply_list_directives(original, patch, merge_key)
        server_order = list(original)
        merged = _merge_by_key(list(original), patch, merge_key, meta.type)
    patch_items, server_only = _partition(merged, patch, merge_key)
    return _normalize_order(patch_items, server_only, patch, server_order, merge_key, kind)


def _apply_list_directives(
    original: list[Any], patch: list[Any], merge_key: str
) -> tuple[list[Any], list[Any]]:
    plain: list[Any] = []
    replace = False
    for item in patch:
        if not isinstance(item, dict):
            raise StrategicPatchError(_bad_arg_type("map[string]interface {}", item))
        if DIRECTIVE not in item:
            plain.append(item)
            continue
        directive = item[DIRECTIVE]
        if directive == "delete":
            if merge_key not in item:
                raise StrategicPatchError(_no_merge_key(item, merge_key))
            _require_maps(original)
            original = [o for o in original if not _same(o.get(merge_key), item[merge_key])]
        elif directive == "replace":
            replace = True
        elif directive == "merge":
            raise StrategicPatchError("merging lists cannot yet be specified in the patch")
        else:
            raise StrategicPatchError(f"unknown patch type: {directive} in map: {_go_map(item)}")
    if replace:
        return plain, []
    return original, plain


def _merge_by_key(
    original: list[Any], patch: list[Any], merge_key: str, type_name: str | None
) -> list[Any]:
    for item in patch:
        if merge_key not in item:
            raise StrategicPatchError(_no_merge_key(item, merge_key))
        index = _find_by_key(original, merge_key, item[merge_key])
        if index is None:
            original.append(item)
        else:
            original[index] = _merge_map(original[index], item, type_name)
    return original


def _merge_ordered_lists(
    original: dict[str, Any], patch: dict[str, Any], type_name: str | None
) -> None:
    """Handle ``$setElementOrder/<field>`` and the list it orders, then drop both from patch."""
    for key in list(patch):
        if not key.startswith(SET_ELEMENT_ORDER):
            continue
        order = patch.pop(key)
        if not isinstance(order, list):
            raise StrategicPatchError(_bad_arg_type("[]interface {}", order))
        field = _extract_key(key, SET_ELEMENT_ORDER, ERR_SET_ELEMENT_ORDER)
        live = original.get(field)
        patched = patch.get(field)
        if live is not None and not isinstance(live, list):
            raise StrategicPatchError(_bad_arg_type("[]interface {}", live))
        if patched is not None and not isinstance(patched, list):
            raise StrategicPatchError(_bad_arg_type("[]interface {}", patched))
        meta = field_meta(type_name, field)
        _check_order_list(patched or [], order, meta.merge_key)
        if field in original and field not in patch:
            merged = live or []
        elif field not in original and field in patch:
            merged = _remove_directives(patched or [])
        elif field in original and field in patch:
            merged = _merge_list_field(live or [], patched or [], meta, False)
        else:
            continue
        if live or patched:
            kind = _element_shape(live or [], patched or [])
            patch_items, server_only = _partition(merged, order, meta.merge_key)
            merged = _normalize_order(
                patch_items, server_only, order, live or [], meta.merge_key, kind
            )
        original[field] = merged
        patch.pop(field, None)


def _check_order_list(patch_list: list[Any], order: list[Any], merge_key: str) -> None:
    """Items of the patch list must appear in the ``$setElementOrder`` list, in its order."""
    if not order or not patch_list:
        return
    items = patch_list
    if merge_key:
        _require_maps(patch_list)
        items = [i for i in patch_list if i.get(DIRECTIVE) != "delete"]
    p = o = 0
    while p < len(items) and o < len(order):
        if isinstance(items[p], dict) and DIRECTIVE in items[p]:
            p += 1
            continue
        if _key_value_equal(items[p], order[o], merge_key):
            p += 1
        o += 1
    if p < len(items) and o >= len(order):
        raise StrategicPatchError(
            f"The order in patch list:\n{patch_list}\n doesn't match {SET_ELEMENT_ORDER} list:\n"
            f"{order}\n"
        )


def _apply_retain_keys(original: dict[str, Any], patch: dict[str, Any]) -> None:
    if RETAIN_KEYS not in patch:
        return
    retain = patch.pop(RETAIN_KEYS)
    if not isinstance(retain, list):
        raise StrategicPatchError(ERR_RETAIN_KEYS)
    for key, value in patch.items():
        if value is None or key.startswith((DELETE_FROM_PRIMITIVE_LIST, SET_ELEMENT_ORDER)):
            continue
        if key not in retain:
            raise StrategicPatchError(ERR_RETAIN_KEYS)
    for key in list(original):
        if key not in retain:
            del original[key]


def _partition(
    merged: list[Any], present: list[Any], merge_key: str
) -> tuple[list[Any], list[Any]]:
    in_patch: list[Any] = []
    server_only: list[Any] = []
    for item in merged:
        if merge_key:
            if not isinstance(item, dict):
                raise StrategicPatchError(_bad_arg_type("map[string]interface {}", item))
            if merge_key not in item:
                raise StrategicPatchError(_no_merge_key(item, merge_key))
            _require_maps(present)
            found = _find_by_key(present, merge_key, item[merge_key]) is not None
        else:
            found = any(_same(item, p) for p in present)
        (in_patch if found else server_only).append(item)
    return in_patch, server_only


def _normalize_order(
    patch_items: list[Any],
    server_only: list[Any],
    patch_order: list[Any],
    server_order: list[Any],
    merge_key: str,
    kind: str,
) -> list[Any]:
    patch_items = _sort_by(patch_items, patch_order, merge_key, kind)
    server_only = _sort_by(server_only, server_order, merge_key, kind)
    # Insert server-only items among the patch items where the live order puts them; when the
    # live order cannot tell (a new item), the patch item comes first.
    out: list[Any] = []
    i = j = 0
    while i < len(server_only) or j < len(patch_items):
        if i >= len(server_only):
            out.append(patch_items[j])
            j += 1
        elif j >= len(patch_items):
            out.append(server_only[i])
            i += 1
        else:
            li = _index(server_order, server_only[i], merge_key, kind)
            ri = _index(server_order, patch_items[j], merge_key, kind)
            if li >= 0 and ri >= 0 and li < ri:
                out.append(server_only[i])
                i += 1
            else:
                out.append(patch_items[j])
                j += 1
    return out


def _sort_by(items: list[Any], order: list[Any], merge_key: str, kind: str) -> list[Any]:
    to_delete: list[Any] = []
    if kind == "map":
        for item in items + order:
            if not isinstance(item, dict):
                raise StrategicPatchError(_bad_arg_type("map[string]interface {}", item))
            if merge_key not in item:
                raise StrategicPatchError(_no_merge_key(item, merge_key))
        to_delete = [i for i in items if i.get(DIRECTIVE) == "delete"]
        items = [i for i in items if i.get(DIRECTIVE) != "delete"]
    # Go's stable insertion sort with its comparator: an item whose position is unknown counts
    # as "less", which the real engine relies on; reproduce it step for step.
    result = list(items)
    for n in range(1, len(result)):
        m = n
        while m > 0 and _less(result[m], result[m - 1], order, merge_key, kind):
            result[m], result[m - 1] = result[m - 1], result[m]
            m -= 1
    return result + to_delete


def _less(a: Any, b: Any, order: list[Any], merge_key: str, kind: str) -> bool:
    ia = _index(order, a, merge_key, kind)
    if ia >= 0:
        ib = _index(order, b, merge_key, kind)
        if ib >= 0:
            return ia < ib
    return True


def _index(items: list[Any], item: Any, merge_key: str, kind: str) -> int:
    def key_of(value: Any) -> Any:
        if kind == "map":
            return value.get(merge_key) if isinstance(value, dict) else None
        return value

    wanted = key_of(item)
    for position, candidate in enumerate(items):
        if _same(wanted, key_of(candidate)):
            return position
    return -1


def _find_by_key(items: list[Any], merge_key: str, value: Any) -> int | None:
    for position, item in enumerate(items):
        if not isinstance(item, dict):
            raise StrategicPatchError(f"value for key {position} is not a map.")
        if merge_key in item and _same(item[merge_key], value):
            return position
    return None


def _key_value_equal(left: Any, right: Any, merge_key: str) -> bool:
    if not merge_key:
        return _same(left, right)
    if not isinstance(left, dict):
        raise StrategicPatchError(_bad_arg_type("map[string]interface {}", left))
    if not isinstance(right, dict):
        raise StrategicPatchError(_bad_arg_type("map[string]interface {}", right))
    if merge_key not in left:
        raise StrategicPatchError(_no_merge_key(left, merge_key))
    if merge_key not in right:
        raise StrategicPatchError(_no_merge_key(right, merge_key))
    return _same(left[merge_key], right[merge_key])


def _require_maps(items: list[Any]) -> None:
    for position, item in enumerate(items):
        if not isinstance(item, dict):
            raise StrategicPatchError(f"value for key {position} is not a map.")


def _shape(value: Any) -> str:
    if isinstance(value, dict):
        return "map"
    if isinstance(value, list):
        return "list"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__


def _element_shape(original: list[Any], patch: list[Any]) -> str:
    shape = ""
    for item in [*original, *patch]:
        this = _shape(item)
        if this == "list":
            raise StrategicPatchError(ERR_NO_LIST_OF_LISTS, code=422)
        if shape and this != shape:
            raise StrategicPatchError(
                f"mismatched types in list: {shape} and {this} elements cannot be merged"
            )
        shape = this
    return shape or "map"


def _same(a: Any, b: Any) -> bool:
    """JSON equality that keeps booleans apart from numbers, as Go's interface equality does."""
    return _shape(a) == _shape(b) and a == b


def _dedup(items: list[Any]) -> list[Any]:
    out: list[Any] = []
    for item in items:
        if not any(_same(item, seen) for seen in out):
            out.append(item)
    return out


def _discard_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        for key in [k for k, v in value.items() if v is None]:
            del value[key]
        for item in value.values():
            _discard_nulls(item)
    elif isinstance(value, list):
        for item in value:
            _discard_nulls(item)
    return value


def _remove_directives(items: list[Any]) -> list[Any]:
    out: list[Any] = []
    for item in items:
        if isinstance(item, dict) and DIRECTIVE in item:
            continue
        out.append(item)
    return out


def _extract_key(key: str, prefix: str, error: str) -> str:
    parts = key.split("/", 1)
    if len(parts) <= 1 or parts[0] != prefix:
        raise StrategicPatchError(error)
    return parts[1]


def _go_map(value: dict[str, Any]) -> str:
    return "map[" + " ".join(f"{k}:{value[k]}" for k in sorted(value)) + "]"


def _no_merge_key(item: dict[str, Any], merge_key: str) -> str:
    return f"map: {_go_map(item)} does not contain declared merge key: {merge_key}"


def _bad_arg_type(expected: str, actual: Any) -> str:
    kinds = {
        dict: "map[string]interface {}",
        list: "[]interface {}",
        str: "string",
        bool: "bool",
        int: "float64",
        float: "float64",
    }
    return f"expected a {expected}, but received a {kinds.get(type(actual), '<nil>')}"
