"""Request bodies in Kubernetes' protobuf encoding (``application/vnd.kubernetes.protobuf``).

kubectl's typed commands (``kubectl create deployment``, ``create configmap``, ``run``...)
send their object as protobuf and do not fall back to JSON, so the server reads it: the
``k8s\\x00`` magic, a ``runtime.Unknown`` envelope (apiVersion, kind, raw bytes) and the object
message, decoded with a schema of field numbers taken from Kubernetes' own descriptors (see
:mod:`tools.protobuf_schema`). The result is the object as its JSON form
would be: Kubernetes' well-known messages (Time, Quantity, IntOrString, RawExtension) become
their JSON values, and fields left at their zero value are dropped, as ``omitempty`` drops them
(except the pointer fields where an explicit zero means something, such as ``replicas: 0``).
Responses stay JSON; clients accept it.
"""

from __future__ import annotations

import base64
import functools
import gzip
import json
import struct
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from k3py.cluster.api import status

MEDIA_TYPE = "application/vnd.kubernetes.protobuf"
MAGIC = b"k8s\x00"
SCHEMA_FILE = Path(__file__).with_name("generated") / "protobuf.json.gz"
_META = "k8s.io.apimachinery.pkg.apis.meta.v1."
# Pointer fields of the served kinds whose explicit zero differs from leaving them out.
KEEP_ZERO = frozenset(
    {
        "replicas",
        "backoffLimit",
        "parallelism",
        "completions",
        "terminationGracePeriodSeconds",
        "activeDeadlineSeconds",
        "ttlSecondsAfterFinished",
        "revisionHistoryLimit",
        "progressDeadlineSeconds",
        "automountServiceAccountToken",
        "suspend",
        "gracePeriodSeconds",
        "runAsUser",
        "runAsGroup",
        "fsGroup",
        "privileged",
        "readOnlyRootFilesystem",
        "allowPrivilegeEscalation",
        "runAsNonRoot",
        "immutable",
        "enableServiceLinks",
    }
)
# A field: [json name, kind, message type name ("" for scalars), repeated (0/1)].
Field = list[Any]
Schema = dict[str, Any]


class ProtobufError(ValueError):
    """The body is not a well-formed Kubernetes protobuf message."""


def varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ProtobufError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def fields(data: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """``(field number, wire type, value)`` for each field of one message, in wire order."""
    pos = 0
    while pos < len(data):
        key, pos = varint(data, pos)
        number, wire = key >> 3, key & 7
        value: int | bytes
        if wire == 0:
            value, pos = varint(data, pos)
        elif wire == 1:
            value, pos = int.from_bytes(data[pos : pos + 8], "little"), pos + 8
        elif wire == 2:
            length, pos = varint(data, pos)
            value, pos = data[pos : pos + length], pos + length
        elif wire == 5:
            value, pos = int.from_bytes(data[pos : pos + 4], "little"), pos + 4
        else:
            raise ProtobufError(f"unsupported wire type {wire}")
        if pos > len(data):
            raise ProtobufError("truncated field")
        yield number, wire, value


@functools.cache
def schema() -> Schema:
    """Message layouts, loaded on the first protobuf request (JSON clients never pay)."""
    loaded: Schema = json.loads(gzip.decompress(SCHEMA_FILE.read_bytes()))
    return loaded


def _signed(value: int, bits: int) -> int:
    return value - (1 << bits) if value >= 1 << (bits - 1) else value


def _scalar(kind: str, wire: int, value: int | bytes) -> Any:
    if kind == "string":
        assert isinstance(value, bytes)
        return value.decode("utf-8", errors="replace")
    if kind == "bytes":
        assert isinstance(value, bytes)
        return base64.b64encode(value).decode()
    assert isinstance(value, int)
    if kind == "bool":
        return bool(value)
    if kind == "int":
        return _signed(value, 64)
    if kind == "double":
        return struct.unpack("<d", value.to_bytes(8, "little"))[0]
    if kind == "float":
        return struct.unpack("<f", value.to_bytes(4, "little"))[0]
    return value


def _packed(kind: str, data: bytes) -> list[Any]:
    values: list[Any] = []
    pos = 0
    while pos < len(data):
        number, pos = varint(data, pos)
        values.append(_scalar(kind, 0, number))
    return values


def _time(message: dict[str, Any], micro: bool) -> str | None:
    if "seconds" not in message and "nanos" not in message:
        return None
    moment = datetime.fromtimestamp(message.get("seconds", 0), UTC)
    if micro:
        micros = message.get("nanos", 0) // 1000
        return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{micros:06d}Z"
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _duration(nanos: int) -> str:
    seconds, rest = divmod(abs(nanos), 10**9)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    text = f"{hours}h" if hours else ""
    text += f"{minutes}m" if hours or minutes else ""
    fraction = f".{rest:09d}".rstrip("0") if rest else ""
    text += f"{seconds}{fraction.rstrip('.')}s"
    return ("-" if nanos < 0 else "") + text


def _special(name: str, message: dict[str, Any]) -> Any:
    """The JSON value of Kubernetes' well-known messages; the message itself otherwise."""
    if name == _META + "Time":
        return _time(message, micro=False)
    if name == _META + "MicroTime":
        return _time(message, micro=True)
    if name == _META + "Duration":
        return _duration(message.get("duration", 0))
    if name == "k8s.io.apimachinery.pkg.api.resource.Quantity":
        return message.get("string", "0")
    if name == "k8s.io.apimachinery.pkg.util.intstr.IntOrString":
        return message.get("strVal", "") if message.get("type") == 1 else message.get("intVal", 0)
    if name in ("k8s.io.apimachinery.pkg.runtime.RawExtension", _META + "FieldsV1"):
        raw = message.get("raw")
        return json.loads(base64.b64decode(raw)) if raw else None
    return message


def _empty(value: Any) -> bool:
    return value is None or value is False or value in ("", 0, {}, [])


def decode_message(name: str, data: bytes) -> Any:
    """The JSON form of one encoded message of type ``name``."""
    layouts = schema()["messages"]
    layout = layouts.get(name)
    if layout is None:
        raise ProtobufError(f"no schema for {name}")
    out: dict[str, Any] = {}
    for number, wire, value in fields(data):
        field: Field | None = layout.get(str(number))
        if field is None:
            continue  # a field newer than our schema: ignored, as JSON's unknown fields
        key, kind, type_name, repeated = field
        if kind == "map":
            assert isinstance(value, bytes)
            entry = decode_map_entry(type_name, value)
            out.setdefault(key, {})[entry[0]] = entry[1]
            continue
        if kind == "message":
            assert isinstance(value, bytes)
            item = decode_message(type_name, value)
        elif repeated and wire == 2 and kind not in ("string", "bytes"):
            assert isinstance(value, bytes)
            out.setdefault(key, []).extend(_packed(kind, value))
            continue
        else:
            item = _scalar(kind, wire, value)
        if repeated:
            out.setdefault(key, []).append(item)
        else:
            out[key] = item
    cleaned = {k: v for k, v in out.items() if not _empty(v) or k in KEEP_ZERO}
    return _special(name, cleaned)


def decode_map_entry(name: str, data: bytes) -> tuple[str, Any]:
    layout = schema()["messages"][name]
    key: Any = ""
    value: Any = None
    for number, wire, raw in fields(data):
        field = layout.get(str(number))
        if field is None:
            continue
        _, kind, type_name, _ = field
        if kind == "message":
            assert isinstance(raw, bytes)
            decoded = decode_message(type_name, raw)
        else:
            decoded = _scalar(kind, wire, raw)
        if number == 1:
            key = decoded
        else:
            value = decoded
    if value is None:
        _, kind, type_name, _ = layout["2"]
        value = "" if kind in ("string", "bytes") else ({} if kind == "message" else 0)
        if kind == "message":
            value = _special(type_name, {})
    return str(key), value


def decode_object(data: bytes) -> dict[str, Any]:
    """A protobuf request body as the object's JSON form; 400 when it cannot be read."""
    if not data.startswith(MAGIC):
        raise status.bad_request("the protobuf body does not start with the Kubernetes magic")
    try:
        envelope: dict[str, Any] = {}
        for number, _, value in fields(data[len(MAGIC) :]):
            envelope[str(number)] = value
        type_meta: dict[str, Any] = {}
        meta_bytes = envelope.get("1", b"")
        assert isinstance(meta_bytes, bytes)
        for number, _, value in fields(meta_bytes):
            type_meta[str(number)] = value.decode() if isinstance(value, bytes) else value
        api_version, kind = type_meta.get("1", ""), type_meta.get("2", "")
        encoding = envelope.get("3", b"")
        if encoding:
            raise ProtobufError("compressed protobuf bodies are not supported")
        message = schema()["kinds"].get(f"{api_version}/{kind}")
        if message is None:
            raise status.unsupported_media_type(f"{MEDIA_TYPE} for {kind} in {api_version}")
        raw = envelope.get("2", b"")
        assert isinstance(raw, bytes)
        obj = decode_message(message, raw)
    except (ProtobufError, UnicodeDecodeError, AssertionError, ValueError) as err:
        raise status.bad_request(f"cannot decode the protobuf body: {err}") from None
    if not isinstance(obj, dict):
        raise status.bad_request("the protobuf body is not an object")
    return {"apiVersion": api_version, "kind": kind, **obj}
