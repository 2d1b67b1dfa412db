"""The OpenAPI v2 document as gnostic's ``openapi.v2.Document`` protobuf message.

kubectl asks ``/openapi/v2`` for ``application/com.github.proto-openapi.spec.v2@v1.0+protobuf``
when the v3 document does not describe a kind (``kubectl apply`` of a kind the server does not
serve), and kube-apiserver answers with the swagger document marshalled into gnostic's messages
(github.com/google/gnostic ``openapiv2/OpenAPIv2.proto``). The generator renders that form
next to the JSON document so the server serves both as stored bytes.

Hand-written because no maintained Python package ships gnostic's messages, and generating
them with ``protoc`` would add a compiler to the build host for a few dozen fields; the field
numbers below are the .proto's. Free-form values (defaults, enums, examples, ``x-`` vendor
extensions) travel as gnostic's ``Any.yaml`` text: JSON is valid YAML, which is how kubectl
reads them back. A construct this encoder does not know raises :class:`ProtobufError` rather
than being dropped.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from typing import Any

Node = dict[str, Any]


class ProtobufError(Exception):
    """The document uses a swagger construct this encoder does not encode."""


# --- wire format ---------------------------------------------------------------------------


def _varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _bytes_field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _string(number: int, value: Any) -> bytes:
    return _bytes_field(number, str(value).encode()) if value not in (None, "") else b""


def _bool(number: int, value: Any) -> bytes:
    return _varint(number << 3) + b"\x01" if value else b""


def _int(number: int, value: Any) -> bytes:
    return _varint(number << 3) + _varint(int(value)) if value else b""


def _double(number: int, value: Any) -> bytes:
    return _varint(number << 3 | 1) + struct.pack("<d", float(value)) if value else b""


def _message(number: int, payload: bytes) -> bytes:
    return _bytes_field(number, payload)


def _any(value: Any) -> bytes:
    """gnostic ``Any``: field 2 is the value as YAML text."""
    return _bytes_field(2, json.dumps(value, ensure_ascii=False, sort_keys=True).encode())


def _named_any(name: str, value: Any) -> bytes:
    return _string(1, name) + _message(2, _any(value))


def _strings(number: int, values: Any) -> bytes:
    if isinstance(values, str):
        values = [values]
    return b"".join(_bytes_field(number, str(v).encode()) for v in values or [])


# --- messages ------------------------------------------------------------------------------

# Scalar fields per message: swagger key -> (field number, kind).
_Fields = dict[str, tuple[int, str]]
_PRIMITIVE_TAIL: _Fields = {
    "maximum": (0, "double"),
    "exclusiveMaximum": (1, "bool"),
    "minimum": (2, "double"),
    "exclusiveMinimum": (3, "bool"),
    "maxLength": (4, "int"),
    "minLength": (5, "int"),
    "pattern": (6, "string"),
    "maxItems": (7, "int"),
    "minItems": (8, "int"),
    "uniqueItems": (9, "bool"),
    "enum": (10, "anys"),
    "multipleOf": (11, "double"),
}


def _with_tail(head: _Fields, start: int, extension: int) -> _Fields:
    """A parameter-like message: ``head`` then the validation keywords from ``start``."""
    fields = dict(head)
    for key, (offset, kind) in _PRIMITIVE_TAIL.items():
        fields[key] = (start + offset, kind)
    fields["x-"] = (extension, "extensions")
    return fields


_PRIMITIVES_ITEMS = _with_tail(
    {
        "type": (1, "string"),
        "format": (2, "string"),
        "items": (3, "primitives"),
        "collectionFormat": (4, "string"),
        "default": (5, "any"),
    },
    6,
    18,
)
_HEADER = {
    **_with_tail(
        {
            "type": (1, "string"),
            "format": (2, "string"),
            "items": (3, "primitives"),
            "collectionFormat": (4, "string"),
            "default": (5, "any"),
        },
        6,
        19,
    ),
    "description": (18, "string"),
}
_PATH_OR_HEADER_PARAMETER = _with_tail(
    {
        "required": (1, "bool"),
        "in": (2, "string"),
        "description": (3, "string"),
        "name": (4, "string"),
        "type": (5, "string"),
        "format": (6, "string"),
        "items": (7, "primitives"),
        "collectionFormat": (8, "string"),
        "default": (9, "any"),
    },
    10,
    22,
)
_QUERY_OR_FORM_PARAMETER = _with_tail(
    {
        "required": (1, "bool"),
        "in": (2, "string"),
        "description": (3, "string"),
        "name": (4, "string"),
        "allowEmptyValue": (5, "bool"),
        "type": (6, "string"),
        "format": (7, "string"),
        "items": (8, "primitives"),
        "collectionFormat": (9, "string"),
        "default": (10, "any"),
    },
    11,
    23,
)
_BODY_PARAMETER: _Fields = {
    "description": (1, "string"),
    "name": (2, "string"),
    "in": (3, "string"),
    "required": (4, "bool"),
    "schema": (5, "schema"),
    "x-": (6, "extensions"),
}
_SCHEMA: _Fields = {
    "$ref": (1, "string"),
    "format": (2, "string"),
    "title": (3, "string"),
    "description": (4, "string"),
    "default": (5, "any"),
    "multipleOf": (6, "double"),
    "maximum": (7, "double"),
    "exclusiveMaximum": (8, "bool"),
    "minimum": (9, "double"),
    "exclusiveMinimum": (10, "bool"),
    "maxLength": (11, "int"),
    "minLength": (12, "int"),
    "pattern": (13, "string"),
    "maxItems": (14, "int"),
    "minItems": (15, "int"),
    "uniqueItems": (16, "bool"),
    "maxProperties": (17, "int"),
    "minProperties": (18, "int"),
    "required": (19, "strings"),
    "enum": (20, "anys"),
    "additionalProperties": (21, "additional"),
    "type": (22, "type"),
    "items": (23, "items"),
    "allOf": (24, "schemas"),
    "properties": (25, "properties"),
    "discriminator": (26, "string"),
    "readOnly": (27, "bool"),
    "externalDocs": (29, "external_docs"),
    "example": (30, "any"),
    "x-": (31, "extensions"),
}
_OPERATION: _Fields = {
    "tags": (1, "strings"),
    "summary": (2, "string"),
    "description": (3, "string"),
    "externalDocs": (4, "external_docs"),
    "operationId": (5, "string"),
    "produces": (6, "strings"),
    "consumes": (7, "strings"),
    "parameters": (8, "parameters"),
    "responses": (9, "responses"),
    "schemes": (10, "strings"),
    "deprecated": (11, "bool"),
    "security": (12, "security"),
    "x-": (13, "extensions"),
}
_PATH_ITEM: _Fields = {
    "$ref": (1, "string"),
    "get": (2, "operation"),
    "put": (3, "operation"),
    "post": (4, "operation"),
    "delete": (5, "operation"),
    "options": (6, "operation"),
    "head": (7, "operation"),
    "patch": (8, "operation"),
    "parameters": (9, "parameters"),
    "x-": (10, "extensions"),
}
_RESPONSE: _Fields = {
    "description": (1, "string"),
    "schema": (2, "schema_item"),
    "headers": (3, "headers"),
    "x-": (5, "extensions"),
}
_INFO: _Fields = {
    "title": (1, "string"),
    "version": (2, "string"),
    "description": (3, "string"),
    "termsOfService": (4, "string"),
    "x-": (7, "extensions"),
}
_EXTERNAL_DOCS: _Fields = {
    "description": (1, "string"),
    "url": (2, "string"),
    "x-": (3, "extensions"),
}
_TAG: _Fields = {
    "name": (1, "string"),
    "description": (2, "string"),
    "externalDocs": (3, "external_docs"),
    "x-": (4, "extensions"),
}
_API_KEY: _Fields = {
    "type": (1, "string"),
    "name": (2, "string"),
    "in": (3, "string"),
    "description": (4, "string"),
    "x-": (5, "extensions"),
}
_BASIC: _Fields = {"type": (1, "string"), "description": (2, "string"), "x-": (3, "extensions")}
_DOCUMENT: _Fields = {
    "swagger": (1, "string"),
    "info": (2, "info"),
    "host": (3, "string"),
    "basePath": (4, "string"),
    "schemes": (5, "strings"),
    "consumes": (6, "strings"),
    "produces": (7, "strings"),
    "paths": (8, "paths"),
    "definitions": (9, "definitions"),
    "parameters": (10, "parameter_definitions"),
    "responses": (11, "response_definitions"),
    "security": (12, "security"),
    "securityDefinitions": (13, "security_definitions"),
    "tags": (14, "tags"),
    "externalDocs": (15, "external_docs"),
    "x-": (16, "extensions"),
}


def _encode(fields: _Fields, node: Node, where: str) -> bytes:
    if not isinstance(node, dict):
        raise ProtobufError(f"{where}: expected an object, found {type(node).__name__}")
    out = bytearray()
    extensions: list[tuple[str, Any]] = []
    for key, value in node.items():
        if key.startswith("x-") and "x-" in fields:
            extensions.append((key, value))
            continue
        spec = fields.get(key)
        if spec is None:
            raise ProtobufError(f"{where}: no protobuf field for {key!r}")
        number, kind = spec
        out += _ENCODERS[kind](number, value, f"{where}.{key}")
    if extensions:
        number = fields["x-"][0]
        out += b"".join(_message(number, _named_any(k, v)) for k, v in extensions)
    return bytes(out)


def _schema(node: Node, where: str) -> bytes:
    return _encode(_SCHEMA, node, where)


def _parameter(node: Node, where: str) -> bytes:
    """``Parameter``: a body parameter (1) or a header/formData/query/path one (2)."""
    location = node.get("in")
    if location == "body":
        return _message(1, _encode(_BODY_PARAMETER, node, where))
    choice = {"header": 1, "formData": 2, "query": 3, "path": 4}.get(str(location))
    if choice is None:
        raise ProtobufError(f"{where}: parameter location {location!r}")
    layout = _QUERY_OR_FORM_PARAMETER if choice in (2, 3) else _PATH_OR_HEADER_PARAMETER
    return _message(2, _message(choice, _encode(layout, node, where)))


def _parameters_item(node: Node, where: str) -> bytes:
    """``ParametersItem``: a ``$ref`` (JsonReference, 2) or a Parameter (1)."""
    if "$ref" in node:
        reference = _string(1, node["$ref"]) + _string(2, node.get("description"))
        return _message(2, reference)
    return _message(1, _parameter(node, where))


def _named(number: int, items: Any, encode: Callable[[Any, str], bytes], where: str) -> bytes:
    """A map as gnostic's ordered ``Named*`` pairs in repeated field ``number``."""
    if not isinstance(items, dict):
        raise ProtobufError(f"{where}: expected an object")
    return b"".join(
        _message(number, _string(1, name) + _message(2, encode(value, f"{where}.{name}")))
        for name, value in items.items()
    )


def _responses(node: Node, where: str) -> bytes:
    codes = {k: v for k, v in node.items() if not k.startswith("x-")}
    extensions = {k: v for k, v in node.items() if k.startswith("x-")}

    def value(response: Node, at: str) -> bytes:
        if "$ref" in response:
            return _message(2, _string(1, response["$ref"]))
        return _message(1, _encode(_RESPONSE, response, at))

    out = _named(1, codes, value, where)
    return out + b"".join(_message(2, _named_any(k, v)) for k, v in extensions.items())


def _security_definition(node: Node, where: str) -> bytes:
    kind = node.get("type")
    if kind == "apiKey":
        return _message(2, _encode(_API_KEY, node, where))
    if kind == "basic":
        return _message(1, _encode(_BASIC, node, where))
    raise ProtobufError(f"{where}: security scheme {kind!r}")


def _security(number: int, value: Any, where: str) -> bytes:
    """Repeated ``SecurityRequirement``: each a map of name -> StringArray."""
    return b"".join(
        _message(number, _named(1, requirement, lambda v, _: _strings(1, v), where))
        for requirement in value
    )


def _type_item(number: int, value: Any, where: str) -> bytes:
    return _message(number, _strings(1, value))


def _items_item(number: int, value: Any, where: str) -> bytes:
    schemas = value if isinstance(value, list) else [value]
    return _message(number, b"".join(_message(1, _schema(s, where)) for s in schemas))


def _additional(number: int, value: Any, where: str) -> bytes:
    if isinstance(value, bool):
        return _message(number, _bool(2, value) or _varint(2 << 3) + b"\x00")
    return _message(number, _message(1, _schema(value, where)))


_ENCODERS: dict[str, Callable[[int, Any, str], bytes]] = {
    "string": lambda n, v, _: _string(n, v),
    "bool": lambda n, v, _: _bool(n, v),
    "int": lambda n, v, _: _int(n, v),
    "double": lambda n, v, _: _double(n, v),
    "strings": lambda n, v, _: _strings(n, v),
    "any": lambda n, v, _: _message(n, _any(v)),
    "anys": lambda n, v, _: b"".join(_message(n, _any(item)) for item in v),
    "extensions": lambda n, v, _: b"",  # collected by _encode
    "schema": lambda n, v, w: _message(n, _schema(v, w)),
    "schemas": lambda n, v, w: b"".join(_message(n, _schema(s, w)) for s in v),
    "schema_item": lambda n, v, w: _message(n, _message(1, _schema(v, w))),
    "additional": _additional,
    "type": _type_item,
    "items": _items_item,
    "properties": lambda n, v, w: _message(n, _named(1, v, _schema, w)),
    "definitions": lambda n, v, w: _message(n, _named(1, v, _schema, w)),
    "primitives": lambda n, v, w: _message(n, _encode(_PRIMITIVES_ITEMS, v, w)),
    "headers": lambda n, v, w: _message(n, _named(1, v, lambda h, at: _encode(_HEADER, h, at), w)),
    "parameters": lambda n, v, w: b"".join(_message(n, _parameters_item(p, w)) for p in v),
    "parameter_definitions": lambda n, v, w: _message(n, _named(1, v, _parameter, w)),
    "response_definitions": lambda n, v, w: _message(
        n, _named(1, v, lambda r, at: _encode(_RESPONSE, r, at), w)
    ),
    "responses": lambda n, v, w: _message(n, _responses(v, w)),
    "operation": lambda n, v, w: _message(n, _encode(_OPERATION, v, w)),
    "paths": lambda n, v, w: _message(
        n, _named(2, v, lambda item, at: _encode(_PATH_ITEM, item, at), w)
    ),
    "info": lambda n, v, w: _message(n, _encode(_INFO, v, w)),
    "external_docs": lambda n, v, w: _message(n, _encode(_EXTERNAL_DOCS, v, w)),
    "tags": lambda n, v, w: b"".join(_message(n, _encode(_TAG, t, w)) for t in v),
    "security": _security,
    "security_definitions": lambda n, v, w: _message(n, _named(1, v, _security_definition, w)),
}


def encode_document(document: Node) -> bytes:
    """The swagger 2.0 ``document`` (as JSON data) as an ``openapi.v2.Document`` message."""
    return _encode(_DOCUMENT, document, "$root")
