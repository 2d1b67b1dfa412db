"""Generates ``generated/protobuf.json.gz``: the protobuf field layout of the served kinds.

Kubernetes clients embed the compiled descriptors of their API types (gzipped
``FileDescriptorProto`` messages, one per ``generated.proto``), so a kubectl binary carries the
exact wire layout of every type it sends. This tool reads them from a kubectl binary, keeps the
messages reachable from the served kinds (plus the bodies of their subresources), and writes
``{"messages": {name: {number: [json name, kind, type, repeated]}}, "kinds": {apiVersion/kind:
message}}``. It runs on a development machine::

    python -m tools.protobuf_schema /usr/bin/kubectl

The server only reads the generated file (:mod:`k3py.cluster.server.rest.protobuf`).
"""

from __future__ import annotations

import argparse
import gzip
import json
import zlib
from pathlib import Path
from typing import Any

from k3py.cluster.api.resources import RESOURCES
from k3py.cluster.server.rest.protobuf import SCHEMA_FILE, fields

# FieldDescriptorProto.type -> our scalar kind
_KINDS = {
    1: "double",
    2: "float",
    3: "int",
    4: "uint",
    5: "int",
    6: "uint",
    7: "uint",
    8: "bool",
    9: "string",
    11: "message",
    12: "bytes",
    13: "uint",
    14: "int",
    15: "int",
    16: "int",
}
# Bodies kubectl's typed clients send besides the served kinds themselves.
_EXTRA_KINDS = {
    "autoscaling/v1/Scale": "k8s.io.api.autoscaling.v1.Scale",
    "policy/v1/Eviction": "k8s.io.api.policy.v1.Eviction",
    "authentication.k8s.io/v1/TokenRequest": "k8s.io.api.authentication.v1.TokenRequest",
    "v1/DeleteOptions": "k8s.io.apimachinery.pkg.apis.meta.v1.DeleteOptions",
    "meta.k8s.io/v1/DeleteOptions": "k8s.io.apimachinery.pkg.apis.meta.v1.DeleteOptions",
}


def descriptors(binary: bytes) -> list[bytes]:
    """Every gzipped ``FileDescriptorProto`` of a ``generated.proto`` in ``binary``."""
    found = []
    start = 0
    while (start := binary.find(b"\x1f\x8b\x08\x00", start)) >= 0:
        try:
            data = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(
                binary[start : start + (1 << 21)]
            )
        except zlib.error:
            data = b""
        if b"generated.proto" in data[:100]:
            found.append(data)
        start += 4
    return found


def _fields_of(data: bytes) -> dict[int, list[Any]]:
    grouped: dict[int, list[Any]] = {}
    for number, _, value in fields(data):
        grouped.setdefault(number, []).append(value)
    return grouped


def _text(values: list[Any] | None) -> str:
    return values[0].decode() if values else ""


def _messages(prefix: str, data: bytes, out: dict[str, dict[str, Any]]) -> None:
    """Collect one DescriptorProto (and its nested types) under its full name."""
    parts = _fields_of(data)
    name = f"{prefix}.{_text(parts.get(1))}"
    options = _fields_of(parts[7][0]) if 7 in parts else {}
    layout: dict[str, Any] = {"map_entry": bool(options.get(7, [0])[0])}
    for raw in parts.get(2, []):
        field = _fields_of(raw)
        kind = _KINDS.get(field.get(5, [0])[0], "unknown")
        type_name = _text(field.get(6)).lstrip(".")
        repeated = int(field.get(4, [1])[0] == 3)
        layout[str(field[3][0])] = [_text(field.get(1)), kind, type_name, repeated]
    out[name] = layout
    for nested in parts.get(3, []):
        _messages(name, nested, out)


def all_messages(binary: bytes) -> dict[str, dict[str, Any]]:
    messages: dict[str, dict[str, Any]] = {}
    for descriptor in descriptors(binary):
        parts = _fields_of(descriptor)
        package = _text(parts.get(2))
        for message in parts.get(4, []):
            _messages(package, message, messages)
    return messages


def _package(api_version: str) -> str:
    group, _, version = api_version.rpartition("/")
    return f"k8s.io.api.{group.split('.')[0] if group else 'core'}.{version}"


def build(binary: bytes) -> dict[str, Any]:
    messages = all_messages(binary)
    kinds = {
        f"{info.api_version}/{info.kind}": f"{_package(info.api_version)}.{info.kind}"
        for info in RESOURCES
    }
    kinds.update(_EXTRA_KINDS)
    kinds = {k: v for k, v in kinds.items() if v in messages}
    keep: dict[str, dict[str, Any]] = {}
    pending = list(kinds.values())
    while pending:
        name = pending.pop()
        if name in keep:
            continue
        layout = dict(messages[name])
        map_entry = layout.pop("map_entry")
        keep[name] = layout
        for field in layout.values():
            if field[1] == "message":
                target = messages[field[2]]
                if target.get("map_entry") and not map_entry:
                    field[1] = "map"
                pending.append(field[2])
    return {"kinds": dict(sorted(kinds.items())), "messages": dict(sorted(keep.items()))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("kubectl", type=Path, help="a kubectl binary (1.32)")
    parser.add_argument("--out", type=Path, default=SCHEMA_FILE)
    args = parser.parse_args(argv)
    content = build(args.kubectl.read_bytes())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(content, separators=(",", ":"), sort_keys=True).encode()
    args.out.write_bytes(gzip.compress(text, mtime=0))
    print(f"{args.out}: {len(content['kinds'])} kinds, {len(content['messages'])} messages")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
