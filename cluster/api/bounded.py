"""Bounded decoding and bounded work: request bodies and patches that cannot exhaust the server.

A small body can describe a huge value: YAML anchors expand exponentially, a JSON patch of
``copy`` operations doubles a value each time, and deep nesting overflows Python's recursion.
:func:`decode_json` and :func:`decode_yaml` refuse, with a 400 Status, nesting deeper than
:data:`MAX_DEPTH`, non-finite numbers (``NaN``, ``Infinity``, ``1e999``), lone UTF-16
surrogates (which no JSON encoder can write back), YAML-only values (binary, sets, non-string
keys) and YAML alias expansion beyond a small factor of the document (as kube-apiserver's YAML
decoder refuses "excessive aliasing"); the YAML checks run on libyaml's event stream before any
object is built. :class:`WorkBudget` bounds the work of one request: the size of the value it
builds (:func:`json_size` stops counting once over the limit, so measuring a huge value is
cheap) and a deadline. The standard library has no size- or alias-bounded decoders; PyYAML
exposes the events that make the alias check cheap.
"""

from __future__ import annotations

import json
import math
import re
import time
from typing import Any

from k3py.cluster.api.status import ApiError, bad_request, timeout

# Kubernetes objects nest a few dozen levels at most (a CronJob's pod template is about 15);
# 100 leaves room and keeps every recursive walk far from Python's recursion limit.
MAX_DEPTH = 100
# YAML aliases may expand a document to this many events, or ten times its own, if more.
MAX_ALIAS_EVENTS = 100_000
ALIAS_FACTOR = 10
_SURROGATE = re.compile("[\ud800-\udfff]")
_ESCAPED_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]")


class _Refused(ValueError):
    pass


def _constant(name: str) -> Any:
    raise _Refused(f"{name} is not a valid JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Refused(f"{text} is out of range for a number")
    return value


def check_value(value: Any, what: str = "json") -> None:
    """Refuse (400) nesting deeper than MAX_DEPTH, lone surrogates, non-JSON values."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        current, depth = stack.pop()
        if isinstance(current, str):
            if _SURROGATE.search(current):
                raise bad_request(f"{what}: invalid Unicode: a lone surrogate in a string")
            continue
        if current is None or isinstance(current, bool | int):
            continue
        if isinstance(current, float):
            if not math.isfinite(current):
                raise bad_request(f"{what}: {current} is not a valid number")
            continue
        if depth > MAX_DEPTH:
            raise bad_request(f"{what}: exceeded max depth of {MAX_DEPTH}")
        if isinstance(current, dict):
            for key, item in current.items():
                if not isinstance(key, str):
                    raise bad_request(f"{what}: object keys must be strings, not {key!r}")
                if _SURROGATE.search(key):
                    raise bad_request(f"{what}: invalid Unicode: a lone surrogate in a key")
                stack.append((item, depth + 1))
        elif isinstance(current, list):
            stack.extend((item, depth + 1) for item in current)
        else:
            raise bad_request(f"{what}: a {type(current).__name__} value has no JSON form")


def decode_json(data: bytes | str) -> Any:
    """JSON as Python data; 400 for malformed, too deep or unrepresentable input."""
    try:
        value = json.loads(data, parse_constant=_constant, parse_float=_finite)
    except RecursionError:
        raise bad_request(f"json: exceeded max depth of {MAX_DEPTH}") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise bad_request(f"json: cannot decode the request body: {err}") from None
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    # Shallow bodies without \\uD8xx escapes (nearly all) need no walk.
    if raw.count(b"{") + raw.count(b"[") > MAX_DEPTH or _ESCAPED_SURROGATE.search(raw):
        check_value(value)
    return value


def _yaml_loader() -> type[Any]:
    import yaml

    base: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

    class Loader(base):  # type: ignore[misc]
        """Safe loading with timestamps kept as the strings JSON would carry."""

    def as_string(loader: Any, node: Any) -> str:
        return str(loader.construct_scalar(node))

    Loader.add_constructor("tag:yaml.org,2002:timestamp", as_string)
    return Loader


def _check_events(data: bytes, loader: type[Any]) -> None:
    """Depth and alias expansion, measured on the event stream (nothing is built yet)."""
    import yaml

    events = 0
    # Expanded event counts: one open counter per collection, and per anchor once closed.
    open_counts: list[tuple[int, str | None]] = [(0, None)]
    anchored: dict[str, int] = {}
    for event in yaml.parse(data, Loader=loader):
        events += 1
        if isinstance(event, yaml.CollectionStartEvent):
            if len(open_counts) > MAX_DEPTH:
                raise bad_request(f"yaml: exceeded max depth of {MAX_DEPTH}")
            open_counts.append((1, event.anchor))
            continue
        if isinstance(event, yaml.CollectionEndEvent):
            size, anchor = open_counts.pop()
            if anchor is not None:
                anchored[anchor] = size
            count, parent_anchor = open_counts[-1]
            open_counts[-1] = (count + size, parent_anchor)
        elif isinstance(event, yaml.AliasEvent):
            count, anchor = open_counts[-1]
            open_counts[-1] = (count + anchored.get(str(event.anchor), 1), anchor)
        else:
            count, anchor = open_counts[-1]
            open_counts[-1] = (count + 1, anchor)
        if open_counts[-1][0] > max(MAX_ALIAS_EVENTS, ALIAS_FACTOR * events) and anchored:
            raise bad_request("yaml: document contains excessive aliasing")


def decode_yaml(data: bytes) -> Any:
    """YAML as JSON-compatible Python data; 400 for malformed, too deep or aliasing input."""
    import yaml

    loader = _yaml_loader()
    try:
        _check_events(data, loader)
        value = yaml.load(data, Loader=loader)  # noqa: S506 - a safe loader subclass
    except RecursionError:
        raise bad_request(f"yaml: exceeded max depth of {MAX_DEPTH}") from None
    except (yaml.YAMLError, ValueError, OverflowError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise bad_request(f"yaml: cannot decode the request body: {first}") from None
    check_value(value, "yaml")
    return value


def _scalar_size(value: Any) -> int:
    if isinstance(value, str):
        return len(value) + 2
    if isinstance(value, bool) or value is None:
        return 5
    return len(str(value)) if isinstance(value, int) and abs(value) > 1 << 60 else 8


def json_size(value: Any, limit: int) -> int:
    """The approximate size of ``value`` as compact JSON; counting stops once past ``limit``.

    Scalars are counted where they stand; only containers go on the stack, and the limit is
    checked once per container, which keeps a long list of strings cheap to measure.
    """
    if not isinstance(value, dict | list):
        return _scalar_size(value)
    total = 0
    stack: list[Any] = [value]
    while stack:
        current = stack.pop()
        if isinstance(current, dict):
            total += 2
            for key, item in current.items():
                total += len(key) + 4
                if isinstance(item, dict | list):
                    stack.append(item)
                elif isinstance(item, str):
                    total += len(item) + 2
                else:
                    total += _scalar_size(item)
        else:
            total += 2
            for item in current:
                if isinstance(item, str):
                    total += len(item) + 3
                elif isinstance(item, dict | list):
                    total += 1
                    stack.append(item)
                else:
                    total += _scalar_size(item) + 1
        if total > limit:
            return total
    return total


class WorkBudget:
    """What one request may build (bytes of JSON) and until when (a monotonic deadline)."""

    def __init__(self, max_bytes: int, seconds: float) -> None:
        self.max_bytes = max_bytes
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds

    def check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise timeout(
                f"the request did not complete within {self.seconds:g}s: the patch is too costly"
            )

    def too_large(self, size: int) -> ApiError:
        return ApiError(
            413,
            "RequestEntityTooLarge",
            f"the patched object would be larger than the limit of {self.max_bytes} bytes"
            + (f" (at least {size} bytes)" if size else ""),
        )

    def check_size(self, value: Any) -> None:
        """Refuse (413) a value whose JSON would exceed ``max_bytes``."""
        size = json_size(value, self.max_bytes)
        if size > self.max_bytes:
            raise self.too_large(size)
