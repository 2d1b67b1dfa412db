"""Kubernetes API errors and the ``Status`` objects they become on the wire.

Every failure that leaves the API server is an :class:`ApiError`, turned into a ``meta/v1``
``Status`` by :meth:`ApiError.to_status`. The constructors name the reasons and codes the real
API server uses, so clients (kubectl, client-go, the Python client) react as they do to it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

from k3py.cluster.api import wire
from k3py.errors import K3pyError


class Cause(NamedTuple):
    """One reason a request was invalid (``details.causes[]``)."""

    reason: str  # FieldValueInvalid, FieldValueRequired, FieldValueNotSupported, ...
    message: str
    field: str = ""

    def to_dict(self) -> dict[str, str]:
        out = {"reason": self.reason, "message": self.message}
        if self.field:
            out["field"] = self.field
        return out


@dataclass(eq=False)
class ApiError(K3pyError):
    code: int
    reason: str
    message: str
    name: str = ""
    group: str = ""
    kind: str = ""
    causes: list[Cause] = field(default_factory=list)
    retry_after_seconds: int = 0

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message

    def to_status(self) -> dict[str, Any]:
        details: dict[str, Any] = {}
        if self.name:
            details["name"] = self.name
        if self.group:
            details["group"] = self.group
        if self.kind:
            details["kind"] = self.kind
        if self.causes:
            details["causes"] = [c.to_dict() for c in self.causes]
        if self.retry_after_seconds:
            details["retryAfterSeconds"] = self.retry_after_seconds
        # Go's metav1.Status field order: kube-apiserver's bodies, byte for byte.
        status: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
        }
        if self.message:
            status["message"] = self.message
        if self.reason:
            status["reason"] = self.reason
        if details:
            status["details"] = details
        status["code"] = self.code
        return status

    def to_json(self) -> bytes:
        """The ``Status`` body as kube-apiserver writes it (see :mod:`k3py.cluster.api.wire`)."""
        return wire.encode(self.to_status())


def _what(group: str, resource: str) -> str:
    return f"{resource}.{group}" if group else resource


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def unauthorized(message: str = "Unauthorized") -> ApiError:
    return ApiError(401, "Unauthorized", message)


def forbidden(
    user: str, verb: str, group: str, resource: str, name: str, why: str, namespace: str = ""
) -> ApiError:
    """kube-apiserver's refusal of an authorized request; ``resource`` may be ``pods/log``."""
    scope = f'in the namespace "{namespace}"' if namespace else "at the cluster scope"
    target = f'resource "{resource}" in API group "{group}" {scope}'
    what = _what(group, resource.split("/")[0])
    subject = f'{what} "{name}"' if name else what
    message = f'{subject} is forbidden: User "{user}" cannot {verb} {target}'
    if why:
        message += f": {why}"
    return ApiError(403, "Forbidden", message, name=name, group=group, kind=resource)


def not_found(group: str, resource: str, name: str) -> ApiError:
    message = f'{_what(group, resource)} "{name}" not found'
    return ApiError(404, "NotFound", message, name=name, group=group, kind=resource)


def path_not_found(path: str) -> ApiError:
    return ApiError(404, "NotFound", f"the server could not find the requested resource ({path})")


def method_not_allowed(method: str, path: str) -> ApiError:
    message = f"the server does not allow this method on the requested resource ({method} {path})"
    return ApiError(405, "MethodNotAllowed", message)


def not_acceptable(message: str) -> ApiError:
    return ApiError(406, "NotAcceptable", message)


def already_exists(group: str, resource: str, name: str) -> ApiError:
    message = f'{_what(group, resource)} "{name}" already exists'
    return ApiError(409, "AlreadyExists", message, name=name, group=group, kind=resource)


def conflict(group: str, resource: str, name: str, why: str) -> ApiError:
    message = f'Operation cannot be fulfilled on {_what(group, resource)} "{name}": {why}'
    return ApiError(409, "Conflict", message, name=name, group=group, kind=resource)


def gone(message: str) -> ApiError:
    return ApiError(410, "Expired", message)


def request_entity_too_large(limit: int) -> ApiError:
    return ApiError(413, "RequestEntityTooLarge", f"request body exceeds the {limit}-byte limit")


def unsupported_media_type(content_type: str) -> ApiError:
    return ApiError(
        415,
        "UnsupportedMediaType",
        f"the body of the request was in an unknown format ({content_type})",
    )


def invalid(group: str, kind: str, name: str, causes: list[Cause]) -> ApiError:
    summary = ", ".join(f"{c.field}: {c.message}" if c.field else c.message for c in causes)
    if len(causes) > 1:  # the API server brackets an aggregate of several field errors
        summary = f"[{summary}]"
    message = (
        f'{kind}.{group} "{name}" is invalid: {summary}'
        if group
        else f'{kind} "{name}" is invalid: {summary}'
    )
    return ApiError(422, "Invalid", message, name=name, group=group, kind=kind, causes=causes)


def too_many_requests(retry_after_seconds: int = 1) -> ApiError:
    message = "Too many requests, please try again later."
    return ApiError(429, "TooManyRequests", message, retry_after_seconds=retry_after_seconds)


def internal(message: str) -> ApiError:
    return ApiError(500, "InternalError", f"Internal error occurred: {message}")


def timeout(message: str) -> ApiError:
    return ApiError(504, "Timeout", message)
