"""Building blocks of object validation: the cause list and checks shared by every kind.

:class:`Errors` collects :class:`Cause` objects through constructors named after Kubernetes'
field errors (``invalid``, ``required``, ``forbidden``…) whose messages read as the API
server's. :func:`go_value` prints a bad value as Go's ``%q``/``%#v`` would, so messages such as
``Invalid value: map[string]string{"app":"web"}`` look familiar.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from k3py.cluster.api import names
from k3py.cluster.api.names import go_quote
from k3py.cluster.api.status import Cause

TOTAL_ANNOTATION_SIZE = 256 * 1024
MAX_SECRET_SIZE = 1024 * 1024
IMMUTABLE = "field is immutable"
NONNEGATIVE = "must be greater than or equal to 0"

Obj = Mapping[str, Any]


class Errors(list[Cause]):
    """An ordered list of causes with constructors named after Kubernetes' field errors."""

    def invalid(self, path: str, value: Any, detail: str) -> None:
        self.append(Cause("FieldValueInvalid", f"Invalid value: {go_value(value)}: {detail}", path))

    def required(self, path: str, detail: str = "") -> None:
        body = "Required value" + (f": {detail}" if detail else "")
        self.append(Cause("FieldValueRequired", body, path))

    def forbidden(self, path: str, detail: str) -> None:
        self.append(Cause("FieldValueForbidden", f"Forbidden: {detail}", path))

    def not_supported(self, path: str, value: Any, supported: list[str]) -> None:
        body = f"Unsupported value: {go_value(value)}"
        if supported:
            body += ": supported values: " + ", ".join(f'"{v}"' for v in supported)
        self.append(Cause("FieldValueNotSupported", body, path))

    def duplicate(self, path: str, value: Any) -> None:
        self.append(Cause("FieldValueDuplicate", f"Duplicate value: {go_value(value)}", path))

    def not_found(self, path: str, value: Any) -> None:
        self.append(Cause("FieldValueNotFound", f"Not found: {go_value(value)}", path))

    def too_long(self, path: str, max_bytes: int) -> None:
        self.append(
            Cause("FieldValueTooLong", f"Too long: must have at most {max_bytes} bytes", path)
        )

    def each(self, path: str, value: Any, messages: list[str]) -> None:
        for message in messages:
            self.invalid(path, value, message)

    def nonnegative(self, path: str, value: Any) -> None:
        if isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
            self.invalid(path, value, NONNEGATIVE)

    def immutable(self, path: str, new: Any, old: Any, shown: Any = None) -> None:
        if new != old:
            self.invalid(path, new if shown is None else shown, IMMUTABLE)


def go_value(value: Any) -> str:
    """A bad value printed as Go's field errors print it (``%q`` for strings, ``%#v`` else)."""
    if isinstance(value, GoText):
        return value.text
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return go_quote(value)
    if isinstance(value, dict) and all(isinstance(v, str) for v in value.values()):
        return (
            "map[string]string{"
            + ", ".join(f"{go_quote(str(k))}:{go_quote(v)}" for k, v in sorted(value.items()))
            + "}"
        )
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return "[]string{" + ", ".join(go_quote(v) for v in value) + "}"
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def entries(value: Any) -> list[dict[str, Any]]:
    """The items of a list field, with anything that is not an object read as an empty one."""
    if not isinstance(value, list):
        return []
    return [item if isinstance(item, dict) else {} for item in value]


class GoText:
    """A value already rendered the way Go would print it."""

    def __init__(self, text: str) -> None:
        self.text = text


def go_label_selector(selector: Any) -> GoText:
    if not isinstance(selector, dict):
        return GoText("null")
    labels = selector.get("matchLabels")
    if isinstance(labels, dict) and labels:
        shown = go_value({str(k): str(v) for k, v in labels.items()})
    else:
        shown = "map[string]string(nil)"
    exprs = selector.get("matchExpressions")
    if isinstance(exprs, list) and exprs:
        parts = []
        for expr in entries(exprs):
            values = expr.get("values")
            values_text = (
                go_value([str(v) for v in values]) if isinstance(values, list) else "[]string(nil)"
            )
            parts.append(
                f"v1.LabelSelectorRequirement{{Key:{go_quote(str(expr.get('key') or ''))}, "
                f"Operator:{go_quote(str(expr.get('operator') or ''))}, Values:{values_text}}}"
            )
        exprs_text = "[]v1.LabelSelectorRequirement{" + ", ".join(parts) + "}"
    else:
        exprs_text = "[]v1.LabelSelectorRequirement(nil)"
    return GoText(f"v1.LabelSelector{{MatchLabels:{shown}, MatchExpressions:{exprs_text}}}")


def validate_labels(errs: Errors, path: str, labels: Any) -> None:
    if not isinstance(labels, dict):
        return
    for key, value in labels.items():
        errs.each(path, key, names.is_qualified_name(str(key)))
        if not isinstance(value, str):
            errs.invalid(path, value, "must be a string")
            continue
        errs.each(path, value, names.is_valid_label_value(value))


def validate_annotations(errs: Errors, path: str, annotations: Any) -> None:
    if not isinstance(annotations, dict):
        return
    total = 0
    for key, value in annotations.items():
        errs.each(path, key, names.is_qualified_name(str(key).lower()))
        total += len(str(key)) + len(str(value) if value is not None else "")
    if total > TOTAL_ANNOTATION_SIZE:
        errs.too_long(path, TOTAL_ANNOTATION_SIZE)


def validate_label_selector(errs: Errors, path: str, selector: Any) -> None:
    """A metav1.LabelSelector: valid keys and values, known operators, values as required."""
    if not isinstance(selector, dict):
        return
    validate_labels(errs, f"{path}.matchLabels", selector.get("matchLabels"))
    for i, expr in enumerate(selector.get("matchExpressions") or []):
        expr_path = f"{path}.matchExpressions[{i}]"
        if not isinstance(expr, dict):
            errs.invalid(expr_path, expr, "must be an object")
            continue
        operator = expr.get("operator")
        values = expr.get("values") or []
        if operator in ("In", "NotIn"):
            if not values:
                errs.required(
                    f"{expr_path}.values", "must be specified when `operator` is 'In' or 'NotIn'"
                )
        elif operator in ("Exists", "DoesNotExist"):
            if values:
                errs.forbidden(
                    f"{expr_path}.values",
                    "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                )
        else:
            errs.invalid(f"{expr_path}.operator", operator or "", "not a valid selector operator")
        key = str(expr.get("key") or "")
        errs.each(f"{expr_path}.key", key, names.is_qualified_name(key))
        for j, value in enumerate(values):
            errs.each(
                f"{expr_path}.values[{j}]", str(value), names.is_valid_label_value(str(value))
            )


def selector_is_empty(selector: Any) -> bool:
    return isinstance(selector, dict) and not (
        selector.get("matchLabels") or selector.get("matchExpressions")
    )


def check_protocol(errs: Errors, path: str, protocol: Any) -> None:
    if not protocol:
        errs.required(path)
    elif protocol not in ("TCP", "UDP", "SCTP"):
        errs.not_supported(path, protocol, ["SCTP", "TCP", "UDP"])


KindValidator = Callable[[Errors, Obj, Obj | None], None]
