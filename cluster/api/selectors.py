"""Label and field selectors: parsing the query-string forms and matching objects.

:class:`LabelSelector` parses ``labelSelector=`` text with every operator Kubernetes has
(``=``, ``==``, ``!=``, ``in``, ``notin``, ``key``, ``!key``, ``>``, ``<``) and builds selectors
from a ``metav1.LabelSelector`` object (``matchLabels``/``matchExpressions``).
:class:`FieldSelector` parses ``fieldSelector=`` text and checks each field against the ones the
API server lets clients select on for that kind. Bad input raises the 400 ``ApiError`` the API
server would send, with its wording.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from k3py.cluster.api.names import go_quote, is_qualified_name, is_valid_label_value
from k3py.cluster.api.resources import ResourceInfo
from k3py.cluster.api.status import ApiError, bad_request

_SPECIAL = set("=!(),><")
_WHITESPACE = set(" \t\r\n")
_KEYWORDS = {")", ",", "!", "==", "=", ">", "in", "<", "!=", "notin", "("}
_BINARY_OPERATORS = ("in", "notin", "=", "==", "!=", "gt", "lt")

# Operators as the Requirement stores them (selection.Operator's values).
IN, NOT_IN, EQUALS, DOUBLE_EQUALS, NOT_EQUALS = "in", "notin", "=", "==", "!="
EXISTS, DOES_NOT_EXIST, GREATER_THAN, LESS_THAN = "exists", "!", "gt", "lt"


@dataclass(frozen=True)
class Requirement:
    key: str
    operator: str
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator in (IN, EQUALS, DOUBLE_EQUALS):
            return self.key in labels and labels[self.key] in self.values
        if self.operator in (NOT_IN, NOT_EQUALS):
            return self.key not in labels or labels[self.key] not in self.values
        if self.operator == EXISTS:
            return self.key in labels
        if self.operator == DOES_NOT_EXIST:
            return self.key not in labels
        if self.operator in (GREATER_THAN, LESS_THAN):
            if self.key not in labels or len(self.values) != 1:
                return False
            have, want = _int64(labels[self.key]), _int64(self.values[0])
            if have is None or want is None:
                return False
            return have > want if self.operator == GREATER_THAN else have < want
        return False

    def __str__(self) -> str:
        if self.operator == EXISTS:
            return self.key
        if self.operator == DOES_NOT_EXIST:
            return "!" + self.key
        values = ",".join(sorted(self.values)) if len(self.values) > 1 else "".join(self.values)
        symbol = {GREATER_THAN: ">", LESS_THAN: "<"}.get(self.operator, self.operator)
        if self.operator in (IN, NOT_IN):
            return f"{self.key} {symbol} ({values})"
        return f"{self.key}{symbol}{values}"


@dataclass(frozen=True)
class LabelSelector:
    """An AND of requirements; ``nothing`` is the selector of a nil ``LabelSelector``."""

    requirements: tuple[Requirement, ...] = ()
    nothing: bool = False

    @classmethod
    def everything(cls) -> LabelSelector:
        return cls()

    @classmethod
    def parse(cls, text: str) -> LabelSelector:
        """Parse ``labelSelector`` query text; raises a 400 ApiError on bad syntax."""
        try:
            requirements = _Parser(text).parse()
        except _SelectorSyntaxError as exc:
            raise bad_request(str(exc)) from None
        return cls(tuple(sorted(requirements, key=lambda r: r.key)))

    @classmethod
    def from_object(cls, selector: Mapping[str, Any] | None) -> LabelSelector:
        """A selector from a ``metav1.LabelSelector`` (None selects nothing, {} everything)."""
        if selector is None:
            return cls(nothing=True)
        match_labels = selector.get("matchLabels") or {}
        expressions = selector.get("matchExpressions") or []
        requirements: list[Requirement] = []
        try:
            for key, value in match_labels.items():
                requirements.append(_new_requirement(str(key), EQUALS, [str(value)]))
            for expr in expressions:
                operator = {
                    "In": IN,
                    "NotIn": NOT_IN,
                    "Exists": EXISTS,
                    "DoesNotExist": DOES_NOT_EXIST,
                }.get(expr.get("operator"))
                if operator is None:
                    op_text = go_quote(str(expr.get("operator") or ""))
                    raise _SelectorSyntaxError(f"{op_text} is not a valid label selector operator")
                values = [str(v) for v in expr.get("values") or []]
                requirements.append(_new_requirement(str(expr.get("key") or ""), operator, values))
        except _SelectorSyntaxError as exc:
            raise bad_request(str(exc)) from None
        return cls(tuple(sorted(requirements, key=lambda r: r.key)))

    @property
    def empty(self) -> bool:
        """True when the selector does not restrict anything."""
        return not self.nothing and not self.requirements

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        if self.nothing:
            return False
        present = labels or {}
        return all(r.matches(present) for r in self.requirements)

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)


def format_labels(labels: Mapping[str, str] | None) -> str:
    """``k=v,k2=v2`` sorted by key, or ``<none>`` (kubectl's labels.FormatLabels)."""
    if not labels:
        return "<none>"
    return ",".join(f"{k}={labels[k]}" for k in sorted(labels))


def format_label_selector(selector: Mapping[str, Any] | None) -> str:
    """A LabelSelector object as selector text, ``<none>`` if empty, ``<error>`` if bad."""
    try:
        text = str(LabelSelector.from_object(selector))
    except ApiError:
        return "<error>"
    return text or "<none>"


class _SelectorSyntaxError(Exception):
    pass


def _int64(text: str) -> int | None:
    try:
        value = int(text, 10)
    except ValueError:
        return None
    if text.strip() != text or "_" in text or not -(2**63) <= value < 2**63:
        return None
    return value


def _field_error(path: str, value: str | list[str], detail: str) -> str:
    shown = go_quote(value) if isinstance(value, str) else _go_string_slice(value)
    return f"{path}: Invalid value: {shown}: {detail}"


def _go_string_slice(values: list[str]) -> str:
    return "[]string{" + ", ".join(go_quote(v) for v in values) + "}"


def _new_requirement(key: str, operator: str, values: list[str]) -> Requirement:
    """Check a requirement as labels.NewRequirement does (path-less, as the parser's)."""
    errs: list[str] = []
    key_errs = is_qualified_name(key)
    if key_errs:
        errs.append(_field_error("key", key, "; ".join(key_errs)))
    if operator in (IN, NOT_IN) and not values:
        errs.append(
            _field_error("values", values, "for 'in', 'notin' operators, values set can't be empty")
        )
    elif operator in (EQUALS, DOUBLE_EQUALS, NOT_EQUALS) and len(values) != 1:
        errs.append(
            _field_error("values", values, "exact-match compatibility requires one single value")
        )
    elif operator in (EXISTS, DOES_NOT_EXIST) and values:
        errs.append(
            _field_error("values", values, "values set must be empty for exists and does not exist")
        )
    elif operator in (GREATER_THAN, LESS_THAN):
        if len(values) != 1:
            errs.append(
                _field_error(
                    "values", values, "for 'Gt', 'Lt' operators, exactly one value is required"
                )
            )
        for i, value in enumerate(values):
            if _int64(value) is None:
                errs.append(
                    _field_error(
                        f"values[{i}]",
                        value,
                        "for 'Gt', 'Lt' operators, the value must be an integer",
                    )
                )
    for i, value in enumerate(values):
        value_errs = is_valid_label_value(value)
        if value_errs:
            errs.append(_field_error(f"values[{i}][{key}]", value, "; ".join(value_errs)))
    unique = list(dict.fromkeys(errs))
    if len(unique) == 1:
        raise _SelectorSyntaxError(unique[0])
    if unique:
        raise _SelectorSyntaxError("[" + ", ".join(unique) + "]")
    return Requirement(key, operator, tuple(values))


_IDENTIFIER, _END = "identifier", "end"


class _Parser:
    """The label selector grammar of k8s.io/apimachinery/pkg/labels, token for token."""

    def __init__(self, text: str) -> None:
        self.items = self._scan(text)
        self.position = 0

    @staticmethod
    def _scan(text: str) -> list[tuple[str, str]]:
        items: list[tuple[str, str]] = []
        pos, end = 0, len(text)
        while True:
            while pos < end and text[pos] in _WHITESPACE:
                pos += 1
            if pos >= end:
                items.append((_END, ""))
                return items
            if text[pos] in _SPECIAL:
                buffer, last = "", ""
                while pos < end and text[pos] in _SPECIAL:
                    if buffer + text[pos] in _KEYWORDS:
                        buffer += text[pos]
                        last = buffer
                        pos += 1
                    elif last:
                        break
                    else:
                        buffer += text[pos]
                        pos += 1
                if not last:
                    items.append(("error", f"error expected: keyword found '{buffer}'"))
                else:
                    items.append((last, last))
            else:
                start = pos
                while pos < end and text[pos] not in _SPECIAL and text[pos] not in _WHITESPACE:
                    pos += 1
                word = text[start:pos]
                items.append((word if word in ("in", "notin") else _IDENTIFIER, word))

    def _lookahead(self, values: bool) -> tuple[str, str]:
        tok, lit = self.items[self.position]
        if values and tok in ("in", "notin"):
            tok = _IDENTIFIER
        return tok, lit

    def _consume(self, values: bool) -> tuple[str, str]:
        tok, lit = self._lookahead(values)
        self.position += 1
        return tok, lit

    def parse(self) -> list[Requirement]:
        requirements: list[Requirement] = []
        while True:
            tok, lit = self._lookahead(True)
            if tok in (_IDENTIFIER, "!"):
                try:
                    requirements.append(self._requirement())
                except _SelectorSyntaxError as exc:
                    raise _SelectorSyntaxError(f"unable to parse requirement: {exc}") from None
                tok, lit = self._consume(True)
                if tok == _END:
                    return requirements
                if tok == ",":
                    tok2, lit2 = self._lookahead(True)
                    if tok2 not in (_IDENTIFIER, "!"):
                        raise _SelectorSyntaxError(
                            f"found '{lit2}', expected: identifier after ','"
                        )
                else:
                    raise _SelectorSyntaxError(f"found '{lit}', expected: ',' or 'end of string'")
            elif tok == _END:
                return requirements
            else:
                raise _SelectorSyntaxError(
                    f"found '{lit}', expected: !, identifier, or 'end of string'"
                )

    def _requirement(self) -> Requirement:
        operator = ""
        tok, lit = self._consume(True)
        if tok == "!":
            operator = DOES_NOT_EXIST
            tok, lit = self._consume(True)
        if tok != _IDENTIFIER:
            raise _SelectorSyntaxError(f"found '{lit}', expected: identifier")
        key_errs = is_qualified_name(lit)
        if key_errs:
            raise _SelectorSyntaxError(_field_error("<nil>", lit, "; ".join(key_errs)))
        key = lit
        if self._lookahead(True)[0] in (_END, ","):
            return _new_requirement(key, operator or EXISTS, [])
        if operator == DOES_NOT_EXIST:
            return _new_requirement(key, operator, [])
        tok, lit = self._consume(False)
        operators = {
            "in": IN,
            "=": EQUALS,
            "==": DOUBLE_EQUALS,
            ">": GREATER_THAN,
            "<": LESS_THAN,
            "notin": NOT_IN,
            "!=": NOT_EQUALS,
        }
        if tok not in operators:
            raise _SelectorSyntaxError(f"found '{lit}', expected: {', '.join(_BINARY_OPERATORS)}")
        operator = operators[tok]
        values = self._values() if operator in (IN, NOT_IN) else self._exact_value()
        return _new_requirement(key, operator, sorted(values))

    def _values(self) -> set[str]:
        tok, lit = self._consume(True)
        if tok != "(":
            raise _SelectorSyntaxError(f"found '{lit}' expected: '('")
        tok, lit = self._lookahead(True)
        if tok in (_IDENTIFIER, ","):
            values = self._identifiers()
            if self._consume(True)[0] != ")":
                raise _SelectorSyntaxError(f"found '{lit}', expected: ')'")
            return values
        if tok == ")":
            self._consume(True)
            return {""}
        raise _SelectorSyntaxError(f"found '{lit}', expected: ',', ')' or identifier")

    def _identifiers(self) -> set[str]:
        values: set[str] = set()
        while True:
            tok, lit = self._consume(True)
            if tok == _IDENTIFIER:
                values.add(lit)
                tok2, lit2 = self._lookahead(True)
                if tok2 == ",":
                    continue
                if tok2 == ")":
                    return values
                raise _SelectorSyntaxError(f"found '{lit2}', expected: ',' or ')'")
            if tok == ",":
                if not values:
                    values.add("")
                tok2, _ = self._lookahead(True)
                if tok2 in (")", ","):
                    values.add("")
                if tok2 == ")":
                    return values
                continue
            raise _SelectorSyntaxError(f"found '{lit}', expected: ',', or identifier")

    def _exact_value(self) -> set[str]:
        tok, _ = self._lookahead(True)
        if tok in (_END, ","):
            return {""}
        tok, lit = self._consume(True)
        if tok == _IDENTIFIER:
            return {lit}
        raise _SelectorSyntaxError(f"found '{lit}', expected: identifier")


# --- field selectors ------------------------------------------------------------------------

# Fields each kind can be selected on (the API server's field label conversion functions);
# kinds without an entry accept only metadata.name and metadata.namespace.
SELECTABLE_FIELDS: dict[str, frozenset[str]] = {
    "Pod": frozenset(
        {
            "metadata.name",
            "metadata.namespace",
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.podIPs",
            "status.nominatedNodeName",
        }
    ),
    "Node": frozenset({"metadata.name", "spec.unschedulable"}),
    "Namespace": frozenset({"metadata.name", "status.phase"}),
    "Secret": frozenset({"metadata.name", "metadata.namespace", "type"}),
    "Service": frozenset({"metadata.name", "metadata.namespace", "spec.clusterIP", "spec.type"}),
    "Event": frozenset(
        {
            "metadata.name",
            "metadata.namespace",
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        }
    ),
    "ReplicaSet": frozenset({"metadata.name", "metadata.namespace", "status.replicas"}),
    "Job": frozenset({"metadata.name", "metadata.namespace", "status.successful"}),
}
_FIELD_ALIASES = {("Pod", "spec.host"): "spec.nodeName"}


@dataclass(frozen=True)
class FieldTerm:
    field: str
    value: str
    negated: bool = False

    def __str__(self) -> str:
        escaped = self.value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=")
        return f"{self.field}{'!=' if self.negated else '='}{escaped}"


@dataclass(frozen=True)
class FieldSelector:
    """An AND of ``field=value`` / ``field!=value`` terms on one kind's selectable fields."""

    kind: str
    terms: tuple[FieldTerm, ...] = ()

    @classmethod
    def parse(cls, text: str, info: ResourceInfo) -> FieldSelector:
        terms: list[FieldTerm] = []
        for part in sorted(_split_terms(text)):
            if not part:
                continue
            split = _split_term(part)
            if split is None:
                raise bad_request(f"invalid selector: '{text}'; can't understand '{part}'")
            field, operator, raw = split
            value = _unescape(raw)
            field = _FIELD_ALIASES.get((info.kind, field), field)
            allowed = SELECTABLE_FIELDS.get(info.kind)
            if allowed is None:
                if field not in ("metadata.name", "metadata.namespace"):
                    raise bad_request(
                        f'"{field}" is not a known field selector: '
                        'only "metadata.name", "metadata.namespace"'
                    )
            elif field not in allowed:
                raise bad_request(f"field label not supported: {field}")
            terms.append(FieldTerm(field, value, negated=operator == "!="))
        return cls(info.kind, tuple(terms))

    @property
    def empty(self) -> bool:
        return not self.terms

    def matches(self, obj: Mapping[str, Any]) -> bool:
        fields = selectable_field_values(self.kind, obj)
        return all((fields.get(t.field, "") == t.value) != t.negated for t in self.terms)

    def requires_exact(self, field: str) -> str | None:
        """The value a ``field=value`` term pins, if any (lets the caller narrow a list)."""
        for term in self.terms:
            if term.field == field and not term.negated:
                return term.value
        return None

    def __str__(self) -> str:
        return ",".join(str(t) for t in self.terms)


def selectable_field_values(kind: str, obj: Mapping[str, Any]) -> dict[str, str]:
    """The values of the selectable fields of ``obj`` as the API server computes them."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    fields = {"metadata.name": str(meta.get("name") or "")}
    if meta.get("namespace") is not None:
        fields["metadata.namespace"] = str(meta.get("namespace") or "")
    if kind == "Pod":
        pod_ips = status.get("podIPs") or []
        pod_ip = str(pod_ips[0].get("ip") or "") if pod_ips else str(status.get("podIP") or "")
        fields.update(
            {
                "spec.nodeName": str(spec.get("nodeName") or ""),
                "spec.restartPolicy": str(spec.get("restartPolicy") or ""),
                "spec.schedulerName": str(spec.get("schedulerName") or ""),
                "spec.serviceAccountName": str(spec.get("serviceAccountName") or ""),
                "spec.hostNetwork": "true" if spec.get("hostNetwork") else "false",
                "status.phase": str(status.get("phase") or ""),
                "status.podIP": pod_ip,
                "status.nominatedNodeName": str(status.get("nominatedNodeName") or ""),
            }
        )
    elif kind == "Node":
        fields["spec.unschedulable"] = "true" if spec.get("unschedulable") else "false"
    elif kind == "Namespace":
        fields["status.phase"] = str(status.get("phase") or "")
    elif kind == "Secret":
        fields["type"] = str(obj.get("type") or "")
    elif kind == "Service":
        fields["spec.clusterIP"] = str(spec.get("clusterIP") or "")
        fields["spec.type"] = str(spec.get("type") or "")
    elif kind == "ReplicaSet":
        fields["status.replicas"] = str(int(status.get("replicas") or 0))
    elif kind == "Job":
        fields["status.successful"] = str(int(status.get("succeeded") or 0))
    elif kind == "Event":
        involved = obj.get("involvedObject") or {}
        source = obj.get("source") or {}
        for name in ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion"):
            fields[f"involvedObject.{name}"] = str(involved.get(name) or "")
        fields["involvedObject.fieldPath"] = str(involved.get("fieldPath") or "")
        fields["reason"] = str(obj.get("reason") or "")
        fields["reportingComponent"] = str(obj.get("reportingComponent") or "")
        fields["source"] = str(source.get("component") or obj.get("reportingComponent") or "")
        fields["type"] = str(obj.get("type") or "")
    return fields


def _split_terms(text: str) -> list[str]:
    if not text:
        return []
    terms: list[str] = []
    start, escaped = 0, False
    for i, ch in enumerate(text):
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == ",":
            terms.append(text[start:i])
            start = i + 1
    terms.append(text[start:])
    return terms


def _split_term(term: str) -> tuple[str, str, str] | None:
    for i in range(len(term)):
        for operator in ("!=", "==", "="):
            if term.startswith(operator, i):
                return term[:i], "=" if operator == "==" else operator, term[i + len(operator) :]
    return None


def _unescape(value: str) -> str:
    if "\\" not in value and "=" not in value and "," not in value:
        return value
    out: list[str] = []
    escaped = False
    for ch in value:
        if escaped:
            if ch not in "\\,=":
                raise bad_request(f"invalid field selector: invalid escape sequence: \\{ch}")
            out.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch in ",=":
            raise bad_request(f"invalid field selector: unescaped character in value: {ord(ch)}")
        else:
            out.append(ch)
    if escaped:
        raise bad_request("invalid field selector: invalid escape sequence: \\")
    return "".join(out)
