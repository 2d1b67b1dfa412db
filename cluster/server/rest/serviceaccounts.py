"""ServiceAccounts at work: the TokenRequest subresource, pod admission, the root CA ConfigMap.

``POST serviceaccounts/<name>/token`` (``kubectl create token``) answers an
``authentication.k8s.io/v1`` TokenRequest with a token from
:class:`~k3py.cluster.server.satoken.ServiceAccountTokens`, bound to a pod when the request
names one (a node may only ask for tokens bound to its own pods, as Kubernetes' Node
authorizer requires). :func:`admit_pod` is the ServiceAccount admission plugin: a pod without
an account gets ``default``, a pod naming an account that does not exist is refused (403, as
kube-apiserver does; controllers report it in a ``FailedCreate`` Event), and unless
``automountServiceAccountToken`` is false (on the pod, else on the account) it gets the
``kube-api-access-<suffix>`` projected volume (token, ``ca.crt`` from the ``kube-root-ca.crt``
ConfigMap, ``namespace``) mounted read-only at :data:`MOUNT_PATH` in every container.
:func:`ensure_root_ca` writes that ConfigMap in a namespace, as kube-controller-manager's root
CA publisher does.
"""

from __future__ import annotations

import datetime
from typing import Any

from aiohttp import web

from k3py.cluster.api import status
from k3py.cluster.api.resources import by_kind
from k3py.cluster.server.rest.access import user_of
from k3py.cluster.server.rest.context import REST, RestContext
from k3py.cluster.server.rest.http import (
    RequestTarget,
    decode_object,
    json_response,
    media_type,
    read_body,
)
from k3py.cluster.server.satoken import (
    DEFAULT_EXPIRATION,
    MAX_EXPIRATION,
    MIN_EXPIRATION,
    SA_TOKENS,
    Binding,
    random_suffix,
)

Object = dict[str, Any]
PODS = by_kind("v1", "Pod")
ACCOUNTS = by_kind("v1", "ServiceAccount")
CONFIG_MAPS = by_kind("v1", "ConfigMap")
ROOT_CA = "kube-root-ca.crt"
MOUNT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
VOLUME_PREFIX = "kube-api-access-"
# The kubelet asks for this lifetime; kube-apiserver recognises it as the projected default.
PROJECTED_EXPIRATION = 3607


def _ca_bundle(ctx: RestContext) -> str | None:
    path = ctx.settings.data_dir / "server" / "tls" / "server-ca.crt"
    try:
        return path.read_text()
    except OSError:
        return None


async def ensure_root_ca(ctx: RestContext, namespace: str) -> None:
    """The ``kube-root-ca.crt`` ConfigMap of a namespace, holding the cluster CA."""
    from k3py.cluster.server.rest import engine

    assert CONFIG_MAPS is not None
    bundle = _ca_bundle(ctx)
    if bundle is None:
        return
    existing = await ctx.objects.get_or_none(CONFIG_MAPS, namespace, ROOT_CA)
    if existing is not None:
        if (existing.get("data") or {}).get("ca.crt") == bundle:
            return

        def put(obj: Object) -> Object | None:
            obj["data"] = {"ca.crt": bundle}
            return obj

        await engine.mutate(ctx, CONFIG_MAPS, namespace, ROOT_CA, put)
        return
    body = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": ROOT_CA, "namespace": namespace},
        "data": {"ca.crt": bundle},
    }
    try:
        await engine.create_object(ctx, CONFIG_MAPS, body)
    except status.ApiError as err:
        if err.reason != "AlreadyExists":
            raise


def _api_access_volume(name: str) -> Object:
    return {
        "name": name,
        "projected": {
            "defaultMode": 0o644,
            "sources": [
                {
                    "serviceAccountToken": {
                        "expirationSeconds": PROJECTED_EXPIRATION,
                        "path": "token",
                    }
                },
                {"configMap": {"name": ROOT_CA, "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {
                    "downwardAPI": {
                        "items": [
                            {
                                "path": "namespace",
                                "fieldRef": {
                                    "apiVersion": "v1",
                                    "fieldPath": "metadata.namespace",
                                },
                            }
                        ]
                    }
                },
            ],
        },
    }


def _no_account(meta: Object, namespace: str, account: str) -> status.ApiError:
    """kube-apiserver's refusal of a pod whose ServiceAccount does not exist."""
    name = str(meta.get("name") or "")
    generate = str(meta.get("generateName") or "")
    if generate and name.startswith(generate[:58]) and len(name) == len(generate[:58]) + 5:
        name = generate  # kube-apiserver admits before it generates a name: it names the prefix
    why = (
        f"error looking up service account {namespace}/{account}: "
        f'serviceaccount "{account}" not found'
    )
    return status.ApiError(
        403, "Forbidden", f'pods "{name}" is forbidden: {why}', name=name, kind="pods"
    )


async def admit_pod(ctx: RestContext, pod: Object) -> None:
    """Default the pod's account and mount its API credentials (ServiceAccount admission)."""
    assert ACCOUNTS is not None
    spec = pod.get("spec")
    if not isinstance(spec, dict):
        return
    account = str(spec.get("serviceAccountName") or spec.get("serviceAccount") or "default")
    spec["serviceAccountName"] = account
    spec["serviceAccount"] = account
    meta = pod.get("metadata") or {}
    namespace = str(meta.get("namespace") or "default")
    stored = await ctx.objects.get_or_none(ACCOUNTS, namespace, account)
    if stored is None and account == "default":
        # kube-controller-manager's ServiceAccount controller puts a deleted ``default`` back
        # at once; here it comes back when a pod needs it.
        from k3py.cluster.server.rest import engine

        await engine.ensure_service_account(ctx, namespace)
        stored = await ctx.objects.get_or_none(ACCOUNTS, namespace, account)
    if stored is None:
        raise _no_account(meta, namespace, account)
    automount = spec.get("automountServiceAccountToken")
    if automount is None:
        automount = stored.get("automountServiceAccountToken")
    if automount is False:
        return
    volumes = spec.setdefault("volumes", [])
    if not isinstance(volumes, list):
        return
    containers = [
        c
        for key in ("initContainers", "containers")
        for c in (spec.get(key) or [])
        if isinstance(c, dict)
    ]
    if any(
        isinstance(m, dict) and m.get("mountPath") == MOUNT_PATH
        for c in containers
        for m in c.get("volumeMounts") or []
    ):
        return  # the pod mounts its own credentials there
    taken = {v.get("name") for v in volumes if isinstance(v, dict)}
    name = VOLUME_PREFIX + random_suffix()
    while name in taken:
        name = VOLUME_PREFIX + random_suffix()
    volumes.append(_api_access_volume(name))
    for container in containers:
        mounts = container.setdefault("volumeMounts", [])
        if isinstance(mounts, list):
            mounts.append({"name": name, "mountPath": MOUNT_PATH, "readOnly": True})


def _spec(body: Object) -> Object:
    spec = body.get("spec")
    return spec if isinstance(spec, dict) else {}


async def _bound_pod(ctx: RestContext, namespace: str, ref: Object) -> Object:
    assert PODS is not None
    if ref.get("kind") != "Pod":
        raise status.bad_request("boundObjectRef.kind: only Pod tokens are supported")
    pod = await ctx.objects.get_or_none(PODS, namespace, str(ref.get("name", "")))
    if pod is None:
        raise status.not_found("", "pods", str(ref.get("name", "")))
    uid = ref.get("uid")
    if uid and uid != pod["metadata"].get("uid"):
        raise status.conflict("", "pods", str(ref.get("name", "")), "the pod's uid differs")
    return pod


async def create_token(request: web.Request, target: RequestTarget) -> web.Response:
    """``POST serviceaccounts/<name>/token``: a TokenRequest answered with a signed token."""
    assert ACCOUNTS is not None
    ctx = request.app[REST]
    tokens = request.app.get(SA_TOKENS)
    if tokens is None:
        raise status.ApiError(503, "ServiceUnavailable", "this server issues no tokens")
    assert target.namespace is not None
    assert target.name is not None
    raw = await read_body(request, ctx.settings.max_request_body_bytes)
    body = decode_object(raw, media_type(request)) if raw.strip() else {}
    spec = _spec(body)
    account = await ctx.objects.get(ACCOUNTS, target.namespace, target.name)
    expiration = int(spec.get("expirationSeconds") or DEFAULT_EXPIRATION)
    if not MIN_EXPIRATION <= expiration <= MAX_EXPIRATION:
        raise status.invalid(
            "authentication.k8s.io",
            "TokenRequest",
            target.name,
            [
                status.Cause(
                    "FieldValueInvalid",
                    f"may not specify a duration less than {MIN_EXPIRATION} seconds",
                    "spec.expirationSeconds",
                )
            ],
        )
    pod: Object | None = None
    ref = spec.get("boundObjectRef")
    if isinstance(ref, dict):
        pod = await _bound_pod(ctx, target.namespace, ref)
    user = user_of(request)
    node = user.node_name if user is not None and not user.is_admin else None
    if (
        user is not None
        and node is not None
        and (pod is None or (pod.get("spec") or {}).get("nodeName") != node)
    ):
        raise status.forbidden(
            user.name,
            "create",
            "",
            "serviceaccounts/token",
            target.name,
            f'node "{node}" may only request tokens bound to pods on it',
            target.namespace or "",
        )
    audiences = [str(a) for a in spec.get("audiences") or [] if a]
    binding = Binding(
        target.namespace,
        target.name,
        str(account["metadata"].get("uid", "")),
        str(pod["metadata"]["name"]) if pod else "",
        str(pod["metadata"].get("uid", "")) if pod else "",
    )
    token, expires = tokens.issue(binding, audiences, expiration)
    stamp = datetime.datetime.fromtimestamp(expires, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    answer = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "metadata": {
            "name": target.name,
            "namespace": target.namespace,
            "creationTimestamp": ctx.now(),
        },
        "spec": {
            **spec,
            "audiences": audiences or [tokens.issuer],
            "expirationSeconds": expiration,
        },
        "status": {"token": token, "expirationTimestamp": stamp},
    }
    return json_response(answer, code=201)
