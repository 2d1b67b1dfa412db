"""Value types of request bodies, checked as kube-apiserver's typed decoding checks them.

kube-apiserver decodes a body into Go structs, so ``"replicas": "two"`` or ``"spec": 1`` fails
with 400 before anything else looks at the object. k3py keeps objects as JSON, so this module
walks a body against the kinds' field layouts (the same per-kind schema the protobuf decoder
uses, which knows every field's type) and answers with the same kind of 400. Fields the schema
does not know are left to ``fieldValidation``; ``null`` is accepted anywhere, as Go's decoder
accepts it. Integers must fit their Go type: the schema's varints do not say int32 or int64,
so the few int64 fields of the served kinds are named in :data:`INT64_FIELDS` and every other
integer field is an int32, as in the Kubernetes API types.
"""

from __future__ import annotations

import functools
from typing import Any

from k3py.cluster.api import status
from k3py.cluster.api.resources import ResourceInfo
from k3py.cluster.server.rest import protobuf

_META = "k8s.io.apimachinery.pkg.apis.meta.v1."
_FREE_FORM = frozenset({"k8s.io.apimachinery.pkg.runtime.RawExtension", _META + "FieldsV1"})
_STRING_LIKE = frozenset({_META + "Time", _META + "MicroTime", _META + "Duration"})
_QUANTITY = "k8s.io.apimachinery.pkg.api.resource.Quantity"
_INT_OR_STRING = "k8s.io.apimachinery.pkg.util.intstr.IntOrString"
_GO_TYPES = {
    "string": "string",
    "bytes": "[]uint8",
    "int": "int64",
    "uint": "uint64",
    "bool": "bool",
    "double": "float64",
    "float": "float32",
}
# The int64 fields of the served kinds (metadata, pods, workloads, jobs, events, leases,
# delete options); every other integer field of the API is an int32.
INT64_FIELDS = frozenset(
    {
        "generation",
        "deletionGracePeriodSeconds",
        "observedGeneration",
        "remainingItemCount",
        "terminationGracePeriodSeconds",
        "activeDeadlineSeconds",
        "startingDeadlineSeconds",
        "runAsUser",
        "runAsGroup",
        "fsGroup",
        "supplementalGroups",
        "uid",
        "gid",
        "expirationSeconds",
        "tolerationSeconds",
        "seconds",
        "revision",
        "gracePeriodSeconds",
    }
)
INT32_RANGE = (-(2**31), 2**31 - 1)
INT64_RANGE = (-(2**63), 2**63 - 1)
# A field by JSON name: (kind, message type, repeated).
Layout = dict[str, tuple[str, str, bool]]


@functools.cache
def _layouts() -> dict[str, Layout]:
    return {
        name: {f[0]: (f[1], f[2], bool(f[3])) for f in fields.values()}
        for name, fields in protobuf.schema()["messages"].items()
    }


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _short(message: str) -> str:
    return message.rsplit(".", 1)[-1]


class _Mismatch(Exception):
    def __init__(self, value: Any, where: str, go_type: str) -> None:
        super().__init__(
            f"json: cannot unmarshal {_json_type(value)} into Go struct field {where} of type"
            f" {go_type}"
        )


class _OutOfRange(_Mismatch):
    def __init__(self, value: Any, where: str, go_type: str) -> None:
        Exception.__init__(
            self,
            f"json: cannot unmarshal number {value} into Go struct field {where} of type {go_type}",
        )


def _int_type(where: str) -> tuple[str, tuple[int, int]]:
    field = where.rsplit(".", 1)[-1]
    return ("int64", INT64_RANGE) if field in INT64_FIELDS else ("int32", INT32_RANGE)


def _scalar_ok(kind: str, value: Any) -> bool:
    if kind in ("string", "bytes"):
        return isinstance(value, str)
    if kind == "bool":
        return isinstance(value, bool)
    if kind in ("int", "uint"):
        return (
            isinstance(value, int | float) and not isinstance(value, bool) and value == int(value)
        )
    return isinstance(value, int | float) and not isinstance(value, bool)


def _zero(kind: str, type_name: str) -> Any:
    """Go's zero value of a field kind, as ``null`` decodes into it."""
    if kind in ("string", "bytes"):
        return ""
    if kind == "bool":
        return False
    if kind in ("int", "uint", "double", "float"):
        return 0
    if type_name in _STRING_LIKE or type_name in _FREE_FORM:
        return None
    return {} if kind in ("map", "message") and type_name not in (_QUANTITY, _INT_OR_STRING) else 0


def _check_value(kind: str, type_name: str, value: Any, where: str) -> Any:
    """``value`` checked (and its nulls replaced by zero values, as Go decodes them)."""
    if value is None:
        return _zero(kind, type_name)
    if kind == "map":
        if not isinstance(value, dict):
            raise _Mismatch(value, where, "map[string]…")
        entry = _layouts()[type_name]
        value_kind, value_type, _ = entry.get("value", ("string", "", False))
        for key, item in value.items():
            value[key] = _check_value(value_kind, value_type, item, where)
        return value
    if kind != "message":
        if not _scalar_ok(kind, value):
            raise _Mismatch(value, where, _GO_TYPES.get(kind, kind))
        if kind == "int":
            go_type, (low, high) = _int_type(where)
            if not low <= value <= high:
                raise _OutOfRange(value, where, go_type)
        elif kind == "uint" and not 0 <= value < 2**64:
            raise _OutOfRange(value, where, "uint64")
        return value
    if type_name in _FREE_FORM:
        return value
    if type_name in _STRING_LIKE:
        if not isinstance(value, str):
            raise _Mismatch(value, where, _short(type_name))
        return value
    if type_name == _QUANTITY:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise _Mismatch(value, where, "resource.Quantity")
        return value
    if type_name == _INT_OR_STRING:
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise _Mismatch(value, where, "intstr.IntOrString")
        if isinstance(value, int) and not INT32_RANGE[0] <= value <= INT32_RANGE[1]:
            raise _OutOfRange(value, where, "intstr.IntOrString (int32)")
        return value
    if not isinstance(value, dict):
        raise _Mismatch(value, where, _short(type_name))
    _check_message(type_name, value, _short(type_name))
    return value


def _check_message(name: str, obj: dict[str, Any], where: str) -> None:
    layout = _layouts().get(name)
    if layout is None:
        return
    for key in list(obj):
        value = obj[key]
        if value is None:
            del obj[key]  # null is "not set" to a typed decoder
            continue
        field = layout.get(key)
        if field is None:
            continue
        kind, type_name, repeated = field
        here = f"{where}.{key}"
        if repeated and kind != "map":
            if not isinstance(value, list):
                raise _Mismatch(value, here, f"[]{_GO_TYPES.get(kind, _short(type_name))}")
            value[:] = [_check_value(kind, type_name, item, here) for item in value]
        else:
            obj[key] = _check_value(kind, type_name, value, here)


def check(info: ResourceInfo, obj: dict[str, Any]) -> None:
    """Raise 400 when a field of ``obj`` holds a value of the wrong JSON type; turn ``null``
    values into what Go's decoder makes of them (unset fields, zero list items)."""
    message = protobuf.schema()["kinds"].get(f"{info.api_version}/{info.kind}")
    if message is None:  # a kind without a layout (custom ones): its metadata is still typed
        meta = obj.get("metadata")
        if isinstance(meta, dict):
            try:
                _check_message(_META + "ObjectMeta", meta, "ObjectMeta")
            except _Mismatch as err:
                raise status.bad_request(
                    f'{info.kind} in version "{info.version}" cannot be handled as a'
                    f" {info.kind}: {err}"
                ) from None
        return
    type_meta = {k: obj.pop(k) for k in ("apiVersion", "kind") if k in obj}
    try:
        _check_message(message, obj, info.kind)
    except _Mismatch as err:
        raise status.bad_request(
            f'{info.kind} in version "{info.version}" cannot be handled as a {info.kind}: {err}'
        ) from None
    finally:
        rest = list(obj.items())  # apiVersion and kind first again, as clients wrote them
        obj.clear()
        obj.update(type_meta)
        obj.update(rest)
