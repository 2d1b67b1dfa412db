"""Who is asking, and may they: authentication, authorization and node admission.

:class:`Authenticator` identifies a request's user from its verified client certificate
(``CN`` = user, each ``O`` = a group, as Kubernetes reads X.509 identities) or from a bearer
token listed in the static token file ``<data-dir>/server/cred/tokens`` (kube-apiserver's
``--token-auth-file`` format; an admin-equivalent token is created there on first start).
Requests with neither are anonymous, which only :data:`ANONYMOUS_PATHS` accept.
:func:`authorize` decides on request attributes: ``system:masters`` may do anything; a node
(``system:node:<name>`` in ``system:nodes``) may read what a kubelet reads and change only its
own Node, its own Lease, the pods bound to it and Events, as Kubernetes' Node authorizer allows.
Secrets, ConfigMaps, PersistentVolumeClaims and ServiceAccounts are the exception among reads:
a node may get (or list and watch as one object, ``fieldSelector=metadata.name=…``) only those
that a pod bound to it refers to; :func:`authorize` lets such a request through its first gate
and :func:`check_references` decides it against the node's pods, as the Node authorizer's graph
does. :func:`admit` is NodeRestriction: it checks the objects a node writes, so a node cannot
register under another name, rebind a pod, take another node's Lease or give itself
``node-role.kubernetes.io/*`` labels.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import secrets
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from k3py.cluster.api.podrefs import pod_references
from k3py.cluster.server.pki import ADMIN_GROUP, ADMIN_USER, write_private
from k3py.errors import K3pyError

if TYPE_CHECKING:
    from aiohttp import web

    from k3py.cluster.server.pki import ClusterPKI

logger = logging.getLogger("k3py.server.auth")

NODE_CERTIFICATE_PATH = "/v1-k3py/node-certificate"
# The agent tunnel: only node credentials may open it (see supervisor.connect).
CONNECT_PATH = "/v1-k3py/connect"
# Reachable without credentials. The node certificate endpoint authenticates the join token
# itself, so the API's authenticator must let it through.
ANONYMOUS_PATHS = frozenset(
    {"/cacerts", "/ping", "/version", "/healthz", "/livez", "/readyz", NODE_CERTIFICATE_PATH}
)
# Non-resource URLs every authenticated user may GET (Kubernetes' system:discovery and
# system:public-info-viewer roles).
DISCOVERY_PREFIXES = ("/api", "/apis", "/openapi", "/version", "/healthz", "/livez", "/readyz")

NODE_USER_PREFIX = "system:node:"
NODES_GROUP = "system:nodes"
AUTHENTICATED_GROUP = "system:authenticated"
NODE_LEASE_NAMESPACE = "kube-node-lease"
LEASE_GROUP = "coordination.k8s.io"
# Labels a node may not set on itself (Kubernetes' NodeRestriction reserves this prefix).
RESTRICTED_LABEL_PREFIX = "node-restriction.kubernetes.io/"
# Role labels decide where workloads go; NodeRestriction refuses them from the node itself.
NODE_ROLE_LABEL_PREFIX = "node-role.kubernetes.io/"

READ_VERBS = frozenset({"get", "list", "watch"})
WRITE_VERBS = frozenset({"update", "patch"})
# What a kubelet reads: (group, resource).
NODE_READABLE = frozenset(
    {
        ("", "nodes"),
        ("", "pods"),
        ("", "services"),
        ("", "endpoints"),
        ("", "namespaces"),
    }
)
# What a node may read only when a pod bound to it refers to the object by name.
NODE_REFERENCED = frozenset(
    {
        ("", "configmaps"),
        ("", "secrets"),
        ("", "persistentvolumeclaims"),
        ("", "serviceaccounts"),
    }
)
# Lists a node's pods in one namespace (for the reference check).
PodLister = Callable[[str], Awaitable[Iterable[Mapping[str, Any]]]]
EVENT_GROUPS = frozenset({"", "events.k8s.io"})


class AuthError(K3pyError):
    """The server's credential files cannot be read or created."""


@dataclass(frozen=True)
class UserInfo:
    name: str
    groups: tuple[str, ...] = ()

    @property
    def is_admin(self) -> bool:
        return ADMIN_GROUP in self.groups

    @property
    def node_name(self) -> str | None:
        """The node this user is, when it is a node credential."""
        if NODES_GROUP in self.groups and self.name.startswith(NODE_USER_PREFIX):
            return self.name[len(NODE_USER_PREFIX) :] or None
        return None


@dataclass(frozen=True)
class RequestAttributes:
    """What a request does. ``resource`` is empty for non-resource URLs (then ``path`` names
    the URL); for create, ``name`` is empty and :func:`admit` checks the object's name."""

    verb: str
    group: str
    resource: str
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    path: str = ""


def is_anonymous_path(path: str) -> bool:
    """True for URLs anyone may reach: the ``ANONYMOUS_PATHS`` and their health sub-checks."""
    if path in ANONYMOUS_PATHS or path == "/version/":
        return True
    # /static/: the installer (anonymous) and the wheel (checks the join token itself).
    return path.startswith(("/healthz/", "/livez/", "/readyz/", "/static/"))


def _token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _parse_token_file(text: str, path: Path) -> dict[bytes, UserInfo]:
    """kube-apiserver's static token file: ``token,user,uid[,"group1,group2"]`` per line."""
    users: dict[bytes, UserInfo] = {}
    for number, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not row or not row[0].strip() or row[0].lstrip().startswith("#"):
            continue
        if len(row) < 3:
            raise AuthError(f"{path} line {number}: expected token,user,uid[,groups]")
        token, user = row[0].strip(), row[1].strip()
        groups = tuple(g.strip() for g in row[3].split(",") if g.strip()) if len(row) > 3 else ()
        if not user:
            raise AuthError(f"{path} line {number}: the user name is empty")
        users[_token_digest(token)] = UserInfo(user, groups)
    return users


def ensure_token_file(data_dir: Path) -> Path:
    """Create ``<data-dir>/server/cred/tokens`` with one admin token unless it exists."""
    path = data_dir / "server" / "cred" / "tokens"
    if not path.exists():
        token = secrets.token_hex(16)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.parent.chmod(0o700)
            write_private(path, f'{token},{ADMIN_USER},{ADMIN_USER},"{ADMIN_GROUP}"\n'.encode())
        except OSError as err:
            raise AuthError(f"cannot create the token file {path}: {err}") from None
        logger.info("created admin bearer token", extra={"fields": {"path": str(path)}})
    return path


def _bearer(headers: Mapping[str, str]) -> str | None:
    header = headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return value.strip() or None


def identity_from_certificate(der: bytes) -> UserInfo | None:
    """The user a (CA-verified) client certificate names: ``CN`` and every ``O``."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        return None
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    common_name = names[0].value if names else ""
    if not isinstance(common_name, str) or not common_name:
        return None
    groups = [
        a.value
        for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
        if isinstance(a.value, str)
    ]
    return UserInfo(common_name, (*groups, AUTHENTICATED_GROUP))


class Authenticator:
    """Identifies a request's user from its client certificate or its bearer token."""

    def __init__(self, pki: ClusterPKI, data_dir: Path) -> None:
        self._pki = pki
        path = self._token_path = ensure_token_file(data_dir)
        try:
            text = path.read_text()
        except OSError as err:
            raise AuthError(f"cannot read the token file {path}: {err}") from None
        self._tokens = _parse_token_file(text, path)
        # Parsed certificate identities by DER; bounded because certificates are few (one per
        # node and the admin), and a flood of distinct ones only rebuilds the cache.
        self._identities: dict[bytes, UserInfo | None] = {}

    def admin_token(self) -> str:
        """The first admin-equivalent bearer token in the token file (for local clients)."""
        for row in csv.reader(io.StringIO(self._token_path.read_text())):
            if len(row) > 3 and ADMIN_GROUP in row[3].split(",") and row[0].strip():
                return row[0].strip()
        raise AuthError(f"{self._token_path} holds no {ADMIN_GROUP} token")

    def _from_certificate(self, request: web.Request) -> UserInfo | None:
        transport = request.transport
        if transport is None:
            return None
        ssl_object: Any = transport.get_extra_info("ssl_object")
        if ssl_object is None:
            return None
        # Only a certificate that passed verification against the cluster CA reaches here: the
        # context uses CERT_OPTIONAL, so OpenSSL rejects the handshake for any other.
        der = ssl_object.getpeercert(binary_form=True)
        if not der:
            return None
        if der not in self._identities:
            if len(self._identities) >= 1024:
                self._identities.clear()
            self._identities[der] = identity_from_certificate(der)
        return self._identities[der]

    def authenticate_token(self, token: str) -> UserInfo | None:
        user = self._tokens.get(_token_digest(token))
        if user is None:
            return None
        return UserInfo(user.name, (*user.groups, AUTHENTICATED_GROUP))

    def authenticate(self, request: web.Request) -> UserInfo | None:
        """The request's user, or None when it carries no valid credential."""
        user = self._from_certificate(request)
        if user is not None:
            return user
        token = _bearer(request.headers)
        return self.authenticate_token(token) if token else None


def _resource_text(attrs: RequestAttributes) -> str:
    resource = f"{attrs.resource}/{attrs.subresource}" if attrs.subresource else attrs.resource
    return f"{resource}.{attrs.group}" if attrs.group else resource


def _authorize_node(node: str, attrs: RequestAttributes) -> str | None:
    key = (attrs.group, attrs.resource)
    verb, sub, name = attrs.verb, attrs.subresource, attrs.name
    if key == ("", "nodes"):
        if verb in READ_VERBS and sub in {"", "status"}:
            return None
        if verb == "create" and not sub:
            return None  # admit() checks the new Node's name
        if verb in WRITE_VERBS and sub in {"", "status"}:
            return None if name == node else f'node "{node}" can only change its own Node object'
        return f'node "{node}" may not {verb} {_resource_text(attrs)}'
    if key == (LEASE_GROUP, "leases"):
        if attrs.namespace != NODE_LEASE_NAMESPACE:
            return f'node "{node}" can only access Leases in the {NODE_LEASE_NAMESPACE} namespace'
        if verb == "create" or (verb in {"get", "update", "patch"} and name == node):
            return None
        return f'node "{node}" can only get, create, update and patch its own Lease'
    if key == ("ota.k3py.io", "updateplans"):
        # Agents follow the plans and report their own progress in the status.
        if (verb in READ_VERBS and sub in {"", "status"}) or (
            verb in {"update", "patch"} and sub == "status"
        ):
            return None
        return f'node "{node}" may only read UpdatePlans and update their status'
    if key == ("", "pods"):
        if verb in READ_VERBS and sub in {"", "status"}:
            return None
        if verb in WRITE_VERBS and sub == "status" and name:
            return None  # admit() checks the pod is bound to this node
        if verb == "delete" and not sub and name:
            return None  # admit() checks the pod is bound to this node
        return f'node "{node}" may only update the status of and delete pods bound to it'
    if key in NODE_REFERENCED:
        if key == ("", "serviceaccounts") and verb == "create" and sub == "token" and name:
            return None  # check_references(); the handler checks the token's pod is bound here
        if verb in READ_VERBS and not sub and attrs.namespace and name:
            return None  # check_references() decides against the node's pods
        return (
            f'node "{node}" may only get {_resource_text(attrs)} referenced by pods bound to it,'
            " one object at a time"
        )
    if attrs.resource == "events" and attrs.group in EVENT_GROUPS:
        if verb in {"create", "update", "patch"}:
            return None
        return f'node "{node}" may only create and patch events'
    if verb in READ_VERBS and key in NODE_READABLE and not sub:
        return None
    return f'node "{node}" may not {verb} {_resource_text(attrs)}'


def authorize(user: UserInfo, attrs: RequestAttributes) -> str | None:
    """None when ``user`` may do what ``attrs`` describe, else the reason it may not."""
    if user.is_admin:
        return None
    if not attrs.resource:
        # Non-resource URLs: the verb is the lower-case HTTP method, as in Kubernetes.
        if is_anonymous_path(attrs.path):
            return None
        if attrs.path == CONNECT_PATH and user.node_name is not None and attrs.verb == "get":
            return None
        if attrs.verb in {"get", "head"} and attrs.path.startswith(DISCOVERY_PREFIXES):
            return None
        # OTA bundles (k3py.cluster.server.otabundles): nodes download them.
        if node_may_read_bundle(user, attrs):
            return None
        return f"access to {attrs.path or 'this URL'} is not granted to {user.name}"
    node = user.node_name
    if node is not None:
        return _authorize_node(node, attrs)
    return "no policy grants this access (k3py grants it to system:masters and to nodes)"


def node_may_read_bundle(user: UserInfo, attrs: RequestAttributes) -> bool:
    return (
        user.node_name is not None
        and attrs.verb in {"get", "head"}
        and attrs.path.startswith("/ota/v1/bundles")
    )


def needs_reference_check(user: UserInfo, attrs: RequestAttributes) -> bool:
    """True when :func:`check_references` must also allow the request."""
    return (
        user.node_name is not None
        and not user.is_admin
        and (attrs.group, attrs.resource) in NODE_REFERENCED
    )


async def check_references(
    user: UserInfo, attrs: RequestAttributes, pods_in_namespace: PodLister
) -> str | None:
    """None when a pod bound to the node refers to the object ``attrs`` name, else why not."""
    node = user.node_name
    wanted = (attrs.resource, attrs.namespace, attrs.name)
    for pod in await pods_in_namespace(attrs.namespace):
        if _spec(pod).get("nodeName") == node and wanted in pod_references(dict(pod)):
            return None
    return (
        f'no relationship found between node "{node}" and this object'
        f" ({_resource_text(attrs)} {attrs.namespace}/{attrs.name})"
    )


def _meta(obj: Mapping[str, Any] | None) -> Mapping[str, Any]:
    meta = obj.get("metadata") if obj else None
    return meta if isinstance(meta, Mapping) else {}


def _spec(obj: Mapping[str, Any] | None) -> Mapping[str, Any]:
    spec = obj.get("spec") if obj else None
    return spec if isinstance(spec, Mapping) else {}


def _is_restricted_label(key: str) -> bool:
    prefix, slash, _ = key.partition("/")
    if not slash:
        return False
    for reserved in (RESTRICTED_LABEL_PREFIX, NODE_ROLE_LABEL_PREFIX):
        domain = reserved.rstrip("/")
        if prefix == domain or prefix.endswith("." + domain):
            return True
    return False


def _restricted_labels(obj: Mapping[str, Any] | None) -> dict[str, Any]:
    labels = _meta(obj).get("labels")
    if not isinstance(labels, Mapping):
        return {}
    return {k: v for k, v in labels.items() if isinstance(k, str) and _is_restricted_label(k)}


def _admit_node_object(
    node: str,
    attrs: RequestAttributes,
    obj: Mapping[str, Any] | None,
    old: Mapping[str, Any] | None,
) -> str | None:
    if obj is None:
        return None
    if _meta(obj).get("name") != node:
        return f'node "{node}" may not create or change Node "{_meta(obj).get("name", "")}"'
    if _restricted_labels(obj) != _restricted_labels(old):
        return (
            f'node "{node}" may not set labels with the {RESTRICTED_LABEL_PREFIX} or'
            f" {NODE_ROLE_LABEL_PREFIX} prefix"
        )
    if old is not None and _spec(obj).get("taints") != _spec(old).get("taints"):
        return f'node "{node}" may not change its own taints'
    return None


def _admit_lease(
    node: str, obj: Mapping[str, Any] | None, old: Mapping[str, Any] | None
) -> str | None:
    for lease in (obj, old):
        if lease is None:
            continue
        if _meta(lease).get("name") != node:
            return f'node "{node}" can only change its own Lease'
        holder = _spec(lease).get("holderIdentity")
        if holder not in (None, node):
            return f'node "{node}" may not set the Lease holder to "{holder}"'
    return None


def _admit_pod(
    node: str,
    attrs: RequestAttributes,
    obj: Mapping[str, Any] | None,
    old: Mapping[str, Any] | None,
) -> str | None:
    current = old if old is not None else obj
    if current is None:
        return None
    bound_to = _spec(current).get("nodeName")
    if bound_to != node:
        return f'node "{node}" can only {attrs.verb} pods bound to it, not to "{bound_to or ""}"'
    if obj is not None and _spec(obj).get("nodeName") != bound_to:
        return f'node "{node}" may not rebind a pod to another node'
    return None


def admit(
    user: UserInfo,
    attrs: RequestAttributes,
    obj: dict[str, Any] | None,
    old: dict[str, Any] | None,
) -> str | None:
    """NodeRestriction: None when a node may write ``obj`` (replacing ``old``; for delete,
    ``obj`` is None and ``old`` is the stored object), else the reason it may not. Users other
    than nodes are not restricted here."""
    node = user.node_name
    if node is None or user.is_admin:
        return None
    key = (attrs.group, attrs.resource)
    if key == ("", "nodes"):
        return _admit_node_object(node, attrs, obj, old)
    if key == (LEASE_GROUP, "leases"):
        return _admit_lease(node, obj, old)
    if key == ("", "pods"):
        return _admit_pod(node, attrs, obj, old)
    if key == ("ota.k3py.io", "updateplans"):
        return _admit_plan_status(node, obj, old)
    return None


def _admit_plan_status(
    node: str, obj: dict[str, Any] | None, old: dict[str, Any] | None
) -> str | None:
    """A node reports its own progress: of an UpdatePlan's status it may add, change or remove
    only the entry that names it; the plan's own fields and other nodes' entries stay."""

    def without_node(plan: dict[str, Any] | None) -> tuple[object, list[str]]:
        status = dict((plan or {}).get("status") or {})
        entries = status.pop("nodes", None)
        listed = entries if isinstance(entries, list) else []
        others = sorted(json.dumps(e, sort_keys=True) for e in listed
                        if not (isinstance(e, dict) and e.get("name") == node))  # fmt: skip
        return json.dumps(status, sort_keys=True), others

    if without_node(obj) != without_node(old):
        return f'node "{node}" can only change its own entry of an UpdatePlan\'s status'
    return None
