"""Shared pieces of the Table printers: column definitions, ages, safe field access.

Ages are written as kubectl's HumanDuration writes them (``45s``, ``3m2s``, ``15m``, ``5h3m``,
``3d4h``, ``2y15d``); timestamps are RFC 3339 strings as the API stores them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

Obj = Mapping[str, Any]
Cells = tuple[list[Any], list[dict[str, str]]]
Printer = Callable[[Obj, datetime], Cells]


@dataclass(frozen=True)
class Column:
    name: str
    type: str = "string"
    description: str = ""
    priority: int = 0
    format: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "format": self.format,
            "description": self.description,
            "priority": self.priority,
        }


NAME = Column("Name", format="name", description="Name must be unique within a namespace.")
AGE = Column(
    "Age",
    description="CreationTimestamp is a timestamp representing the server time when this object "
    "was created.",
)
CONTAINERS = Column(
    "Containers", description="Names of each container in the template.", priority=1
)
IMAGES = Column(
    "Images", description="Images referenced by each container in the template.", priority=1
)


def human_duration(seconds: float) -> str:
    """kubectl's HumanDuration: ``45s``, ``3m2s``, ``15m``, ``5h3m``, ``3d4h``, ``2y15d``."""
    whole = int(seconds)
    if whole < -1:
        return "<invalid>"
    if whole < 0:
        return "0s"
    if whole < 120:
        return f"{whole}s"
    minutes = whole // 60
    if minutes < 10:
        s = whole % 60
        return f"{minutes}m" if s == 0 else f"{minutes}m{s}s"
    if minutes < 180:
        return f"{minutes}m"
    hours = whole // 3600
    if hours < 8:
        m = minutes % 60
        return f"{hours}h" if m == 0 else f"{hours}h{m}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        h = hours % 24
        return f"{hours // 24}d" if h == 0 else f"{hours // 24}d{h}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = (hours // 24) % 365
        years = hours // 24 // 365
        return f"{years}y" if days == 0 else f"{years}y{days}d"
    return f"{hours // 24 // 365}y"


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def age(value: Any, now: datetime) -> str:
    """Time since ``value`` (an RFC 3339 timestamp) or ``<unknown>``."""
    when = parse_time(value)
    if when is None:
        return "<unknown>"
    return human_duration((now - when).total_seconds())


def object_age(obj: Obj, now: datetime) -> str:
    return age((obj.get("metadata") or {}).get("creationTimestamp"), now)


def name_of(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("name") or "")


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def as_dict(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def as_int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def template_containers(obj: Obj) -> tuple[str, str]:
    """The CONTAINERS and IMAGES cells of an object with a pod template in ``spec.template``."""
    return pod_containers(as_dict(as_dict(as_dict(obj.get("spec")).get("template")).get("spec")))


def pod_containers(pod_spec: Mapping[str, Any]) -> tuple[str, str]:
    """The CONTAINERS and IMAGES cells of a pod spec: names and images, comma-separated."""
    containers = [as_dict(c) for c in as_list(pod_spec.get("containers"))]
    return (
        ",".join(str(c.get("name") or "") for c in containers),
        ",".join(str(c.get("image") or "") for c in containers),
    )


def simple_printer(*extra: tuple[Column, Callable[[Obj], Any]]) -> tuple[list[Column], Printer]:
    """A printer of NAME, the extra columns, then AGE."""
    columns = [NAME, *(c for c, _ in extra), AGE]

    def printer(obj: Obj, now: datetime) -> Cells:
        return [name_of(obj), *(value(obj) for _, value in extra), object_age(obj, now)], []

    return columns, printer


def print_generic(obj: Obj, now: datetime) -> Cells:
    return [name_of(obj), object_age(obj, now)], []


def controller_of(obj: Obj) -> str:
    for ref in (as_dict(r) for r in as_list(as_dict(obj.get("metadata")).get("ownerReferences"))):
        if ref.get("controller") is True:
            group = str(ref.get("apiVersion") or "").rpartition("/")[0]
            kind = f"{ref.get('kind')}.{group}" if group else str(ref.get("kind"))
            return f"{kind.lower()}/{ref.get('name')}"
    return "<none>"


def pod_template_columns(selector_description: str) -> list[Column]:
    """AGE, CONTAINERS, IMAGES and the wide Selector: how a pod-template workload's table ends."""
    return [
        AGE,
        CONTAINERS,
        IMAGES,
        Column("Selector", description=selector_description, priority=1),
    ]
