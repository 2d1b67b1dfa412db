"""Access reviews: asking the authorizer instead of trying (``kubectl auth can-i``, ``whoami``).

``SelfSubjectAccessReview`` asks for the requesting user, ``SubjectAccessReview`` for the user
and groups in its spec (which RBAC lets only privileged users create), the namespaced
``LocalSubjectAccessReview`` likewise but only about its own namespace (what a namespace's
``admin`` may ask, as controllers and tools do),
``SelfSubjectRulesReview`` lists the rules RBAC grants the requester in a namespace
(``kubectl auth can-i --list``), ``SelfSubjectReview`` tells who the requester is
(``kubectl auth whoami``) and ``TokenReview`` who a bearer token's holder is (what
authenticating proxies and Vault ask; ``system:auth-delegator`` may). The access answers come
from the same authorizer chain the requests pass through
(:func:`~k3py.cluster.server.rest.access.decide`), TokenReview's from the same authenticators;
nothing is stored.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from aiohttp import web

from k3py.cluster.api import status
from k3py.cluster.server.auth import RequestAttributes, UserInfo
from k3py.cluster.server.pki import ADMIN_GROUP
from k3py.cluster.server.rest.access import AUTHENTICATOR, NO_RBAC_MATCH, decide, uid_of, user_of
from k3py.cluster.server.rest.context import REST
from k3py.cluster.server.rest.http import (
    RequestTarget,
    decode_object,
    json_response,
    media_type,
    read_body,
)
from k3py.cluster.server.satoken import SA_TOKENS, looks_like_jwt, user_of_account

Object = dict[str, Any]
_ALL_RULES: list[Object] = [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}]


def _attributes(spec: Object) -> RequestAttributes:
    resource = spec.get("resourceAttributes")
    if isinstance(resource, dict):
        return RequestAttributes(
            verb=str(resource.get("verb", "")),
            group=str(resource.get("group", "")),
            resource=str(resource.get("resource", "")) or "*",
            subresource=str(resource.get("subresource", "")),
            namespace=str(resource.get("namespace", "")),
            name=str(resource.get("name", "")),
        )
    other = spec["nonResourceAttributes"]  # _validate saw one of the two
    return RequestAttributes(
        verb=str(other.get("verb", "")), group="", resource="", path=str(other.get("path", ""))
    )


def _invalid(value: object, message: str, field: str) -> status.Cause:
    return status.Cause(
        "FieldValueInvalid", f"Invalid value: {json.dumps(value)}: {message}", field
    )


def _validate(kind: str, meta: Object, spec: Object) -> None:
    """kube-apiserver's validation of an access review's spec (``ValidateSubjectAccessReview``…)."""
    resource, other = spec.get("resourceAttributes"), spec.get("nonResourceAttributes")
    causes: list[status.Cause] = []
    if isinstance(resource, dict) and isinstance(other, dict):
        message = "cannot be specified in combination with resourceAttributes"
        causes.append(_invalid(other, message, "spec.nonResourceAttributes"))
    elif not isinstance(resource, dict) and not isinstance(other, dict):
        message = "exactly one of nonResourceAttributes or resourceAttributes must be specified"
        causes.append(_invalid(None, message, "spec.resourceAttributes"))
    named = kind in ("SubjectAccessReview", "LocalSubjectAccessReview")
    if named and not spec.get("user") and not spec.get("groups"):
        message = "at least one of user or group must be specified"
        causes.append(_invalid(str(spec.get("user") or ""), message, "spec.user"))
    if kind == "LocalSubjectAccessReview":
        extra = {k: v for k, v in meta.items() if k not in ("namespace", "managedFields") and v}
        if extra:
            causes.append(_invalid(extra, "must be empty except for namespace", "metadata"))
        namespace = str(meta.get("namespace", ""))
        if isinstance(resource, dict) and str(resource.get("namespace", "")) != namespace:
            asked = str(resource.get("namespace", ""))
            message = "must match metadata.namespace"
            causes.append(_invalid(asked, message, "spec.resourceAttributes.namespace"))
        if isinstance(other, dict):
            message = "disallowed on this kind of request"
            causes.append(_invalid(other, message, "spec.nonResourceAttributes"))
    if causes:
        raise status.invalid("authorization.k8s.io", kind, "", causes)


def _answer(body: Object, spec: Object, result: Object) -> web.Response:
    meta = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
    return json_response(
        {
            "apiVersion": str(body.get("apiVersion") or ""),
            "kind": str(body.get("kind") or ""),
            "metadata": {**(meta or {}), "creationTimestamp": None},
            "spec": spec,
            "status": result,
        },
        code=201,
    )


async def review(request: web.Request, target: RequestTarget) -> web.Response:
    ctx = request.app[REST]
    user = user_of(request)
    if user is None:
        raise status.unauthorized()
    raw = await read_body(request, ctx.settings.max_request_body_bytes)
    body = decode_object(raw, media_type(request)) if raw.strip() else {}
    body.setdefault("apiVersion", target.info.api_version)
    body.setdefault("kind", target.info.kind)
    spec = body.get("spec") if isinstance(body.get("spec"), dict) else {}
    assert spec is not None
    kind = target.info.kind
    meta = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
    assert meta is not None
    if kind == "SelfSubjectReview":
        info = {"username": user.name, "groups": list(user.groups)}
        return _answer(body, spec, {"userInfo": info})
    if kind == "TokenReview":
        return _answer(body, spec, await _token_review(request, spec))
    if kind == "SelfSubjectRulesReview":
        if not spec.get("namespace"):
            raise status.bad_request("no namespace on request")
        return _answer(body, spec, await _rules(request, user, str(spec["namespace"])))
    if target.info.namespaced:  # LocalSubjectAccessReview: the request's namespace is the object's
        if meta.get("namespace") and meta["namespace"] != target.namespace:
            raise status.bad_request(
                "the namespace of the provided object does not match the namespace sent on the "
                "request"
            )
        meta["namespace"] = target.namespace
        body["metadata"] = meta
    _validate(kind, meta, spec)
    subject = user
    if kind != "SelfSubjectAccessReview":
        groups = spec.get("groups") if isinstance(spec.get("groups"), list) else []
        subject = UserInfo(str(spec.get("user", "")), tuple(str(g) for g in groups or []))
    reason = await decide(ctx, subject, _attributes(spec))
    result: Object = {"allowed": reason is None}
    if reason is not None and reason != NO_RBAC_MATCH:  # RBAC's "no opinion" says nothing
        result["reason"] = reason
    return _answer(body, spec, result)


async def _rules(request: web.Request, user: UserInfo, namespace: str) -> Object:
    ctx = request.app[REST]
    if ADMIN_GROUP in user.groups:
        return {
            "resourceRules": _ALL_RULES,
            "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
            "incomplete": False,
        }
    await ctx.rbac.ready(ctx)
    resource_rules, other_rules = [], []
    for rule in ctx.rbac.rules_for(user, namespace):
        if rule.get("nonResourceURLs"):
            other_rules.append(
                {"verbs": rule.get("verbs", []), "nonResourceURLs": rule["nonResourceURLs"]}
            )
        else:
            resource_rules.append({k: v for k, v in rule.items() if k != "nonResourceURLs"})
    return {
        "resourceRules": resource_rules,
        "nonResourceRules": other_rules,
        # Nodes are also authorized by the Node authorizer, which lists no rules.
        "incomplete": user.node_name is not None,
    }


async def _token_review(request: web.Request, spec: Object) -> Object:
    """Who holds a token, as kube-apiserver's TokenReview answers (audiences included)."""
    token = str(spec.get("token") or "")
    if not token:
        raise status.bad_request("token is required for TokenReview in authentication")
    wanted = [str(a) for a in spec.get("audiences") or [] if a]
    known = request.app[AUTHENTICATOR].authenticate_token(token)
    tokens = request.app.get(SA_TOKENS)
    if known is not None:
        # Static tokens are the API server's own: valid for its audience only.
        audiences = [tokens.issuer] if tokens is not None else []
        user: Object = {"username": known.name, "groups": list(known.groups)}
        return _reviewed(user, audiences, wanted)
    reviewed = None
    if tokens is not None and looks_like_jwt(token):
        reviewed = await tokens.review(token, functools.partial(uid_of, request.app[REST]))
    if reviewed is None:
        return {"user": {}, "error": "invalid bearer token"}
    binding, claims = reviewed
    account = user_of_account(binding.namespace, binding.account)
    extra = {"authentication.kubernetes.io/credential-id": [f"JTI={claims.get('jti', '')}"]}
    if binding.pod:
        extra["authentication.kubernetes.io/pod-name"] = [binding.pod]
        extra["authentication.kubernetes.io/pod-uid"] = [binding.pod_uid]
    user = {
        "username": account.name,
        "uid": binding.account_uid,
        "groups": list(account.groups),
        "extra": extra,
    }
    audience = claims.get("aud")
    return _reviewed(user, [str(a) for a in audience] if isinstance(audience, list) else [], wanted)


def _reviewed(user: Object, audiences: list[str], wanted: list[str]) -> Object:
    """An authenticated answer, unless the token is for none of the wanted audiences."""
    if wanted:
        audiences = [a for a in wanted if a in audiences]
        if not audiences:
            return {"user": {}, "error": "token audiences are invalid for the target audiences"}
    return {"authenticated": True, "user": user, "audiences": audiences}
