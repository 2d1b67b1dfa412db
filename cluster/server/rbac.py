"""RBAC: Roles, ClusterRoles and their bindings decide what users, groups and accounts may do.

:class:`RBACAuthorizer` keeps every ``rbac.authorization.k8s.io`` object in memory, listed once
and then followed through one watch of the group's storage prefix (so a change made through any
server of a shared datastore counts), with the subjects' bindings indexed by user and group and
the ClusterRoles' aggregation (``aggregationRule.clusterRoleSelectors``) resolved as the
aggregation controller would. A decision walks only the bindings of the user's name and groups
and is cached until the next RBAC change. Rules match as kube-apiserver's RBAC authorizer
matches them: verbs, API groups, resources (``*``, ``resource/subresource``,
``*/subresource``), resource names, and non-resource URLs (exact or ending in ``*``). A
RoleBinding grants its role's rules in its own namespace; a ClusterRoleBinding everywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from k3py.cluster.api.selectors import LabelSelector
from k3py.cluster.api.status import ApiError
from k3py.cluster.server.auth import RequestAttributes, UserInfo
from k3py.cluster.server.rest.objects import decode
from k3py.cluster.server.store import StoreError

if TYPE_CHECKING:
    from k3py.cluster.server.rest.context import RestContext

logger = logging.getLogger("k3py.server.rbac")

GROUP = "rbac.authorization.k8s.io"
PREFIX = f"/registry/{GROUP}/"
SA_PREFIX = "system:serviceaccount:"
RETRY_SECONDS = 1.0
SYNC_WAIT_SECONDS = 5.0
CACHE_SIZE = 8192

Object = dict[str, Any]
Rule = dict[str, Any]


def _strings(rule: Rule, key: str) -> list[str]:
    value = rule.get(key)
    return [str(v) for v in value] if isinstance(value, list) else []


def _resource_matches(rule: Rule, resource: str, subresource: str) -> bool:
    for wanted in _strings(rule, "resources"):
        if wanted == "*":
            return True
        if not subresource and wanted == resource:
            return True
        if subresource and wanted in (f"{resource}/{subresource}", f"*/{subresource}"):
            return True
    return False


def rule_allows(rule: Rule, attrs: RequestAttributes) -> bool:
    """True when one PolicyRule covers the request."""
    verbs = _strings(rule, "verbs")
    if "*" not in verbs and attrs.verb not in verbs:
        return False
    if not attrs.resource:
        for url in _strings(rule, "nonResourceURLs"):
            if url in ("*", attrs.path):
                return True
            if url.endswith("*") and attrs.path.startswith(url[:-1]):
                return True
        return False
    groups = _strings(rule, "apiGroups")
    if "*" not in groups and attrs.group not in groups:
        return False
    if not _resource_matches(rule, attrs.resource, attrs.subresource):
        return False
    names = _strings(rule, "resourceNames")
    return not names or attrs.name in names


def covers(rules: Iterable[Rule], wanted: Rule, namespace: str) -> bool:
    """True when ``rules`` grant every (verb, group, resource, name or URL) ``wanted`` names."""
    rules = list(rules)
    verbs = _strings(wanted, "verbs")
    for url in _strings(wanted, "nonResourceURLs"):
        for verb in verbs:
            attrs = RequestAttributes(verb=verb, group="", resource="", path=url)
            if not any(rule_allows(r, attrs) for r in rules):
                return False
    for group in _strings(wanted, "apiGroups"):
        for resource in _strings(wanted, "resources"):
            res, _, sub = resource.partition("/")
            for verb in verbs:
                for name in _strings(wanted, "resourceNames") or [""]:
                    attrs = RequestAttributes(verb, group, res, sub, namespace, name)
                    if not any(rule_allows(r, attrs) for r in rules):
                        return False
    return True


@dataclass(frozen=True)
class Grant:
    """A binding's effect: the role it refers to, in a namespace ("" for everywhere)."""

    namespace: str
    role_kind: str  # Role | ClusterRole
    role_namespace: str
    role_name: str


def _subject_keys(subject: Any, binding_namespace: str) -> Iterator[str]:
    if not isinstance(subject, dict):
        return
    kind, name = subject.get("kind"), str(subject.get("name", ""))
    if kind == "User":
        yield "u:" + name
    elif kind == "Group":
        yield "g:" + name
    elif kind == "ServiceAccount":
        namespace = str(subject.get("namespace") or binding_namespace)
        yield f"u:{SA_PREFIX}{namespace}:{name}"


def _key_of(stored_key: str) -> tuple[str, str, str]:
    """(plural, namespace, name) from ``/registry/rbac.authorization.k8s.io/<plural>/...``."""
    parts = stored_key[len(PREFIX) :].split("/")
    if len(parts) == 3:
        return parts[0], parts[1], parts[2]
    return parts[0], "", parts[-1]


_PLURALS = {
    "Role": "roles",
    "ClusterRole": "clusterroles",
    "RoleBinding": "rolebindings",
    "ClusterRoleBinding": "clusterrolebindings",
}


def _object_key(obj: Object) -> tuple[str, str, str]:
    meta = obj.get("metadata") or {}
    plural = _PLURALS.get(str(obj.get("kind", "")), "")
    namespace = str(meta.get("namespace") or "") if plural in ("roles", "rolebindings") else ""
    return plural, namespace, str(meta.get("name", ""))


class RBACAuthorizer:
    def __init__(self) -> None:
        self._objects: dict[tuple[str, str, str], Object] = {}
        self._grants: dict[str, list[Grant]] = {}
        self._rules: dict[tuple[str, str, str], list[Rule]] = {}
        self._cache: dict[tuple[Any, ...], bool] = {}
        self._dirty = True
        self._task: asyncio.Task[None] | None = None
        self._synced = asyncio.Event()

    # -- decisions ---------------------------------------------------------------------------

    async def ready(self, ctx: RestContext) -> bool:
        if (self._task is None or self._task.done()) and not ctx.stopping.is_set():
            self._task = asyncio.create_task(self._run(ctx), name="k3py-rbac")
        if not self._synced.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._synced.wait(), SYNC_WAIT_SECONDS)
        return self._synced.is_set()

    def _rebuild(self) -> None:
        grants: dict[str, list[Grant]] = {}
        rules: dict[tuple[str, str, str], list[Rule]] = {}
        cluster_roles = {
            name: obj
            for (plural, _, name), obj in self._objects.items()
            if plural == "clusterroles"
        }
        for (plural, namespace, name), obj in self._objects.items():
            if plural == "roles":
                rules[("Role", namespace, name)] = list(obj.get("rules") or [])
            elif plural == "clusterroles":
                rules[("ClusterRole", "", name)] = self._aggregate(obj, cluster_roles)
            elif plural in ("rolebindings", "clusterrolebindings"):
                ref = obj.get("roleRef") or {}
                kind = str(ref.get("kind", ""))
                grant = Grant(
                    namespace if plural == "rolebindings" else "",
                    kind,
                    namespace if kind == "Role" else "",
                    str(ref.get("name", "")),
                )
                for subject in obj.get("subjects") or []:
                    for key in _subject_keys(subject, namespace):
                        grants.setdefault(key, []).append(grant)
        self._grants, self._rules = grants, rules
        self._cache.clear()
        self._dirty = False

    @classmethod
    def _aggregate(
        cls, role: Object, cluster_roles: dict[str, Object], seen: frozenset[str] = frozenset()
    ) -> list[Rule]:
        """The role's rules with those of the roles its aggregation selects (which may
        aggregate in turn: ``edit`` takes ``view``'s)."""
        own = list(role.get("rules") or [])
        selectors = (role.get("aggregationRule") or {}).get("clusterRoleSelectors") or []
        if not selectors:
            return own
        parsed = []
        for selector in selectors:
            with contextlib.suppress(ApiError):
                parsed.append(LabelSelector.from_object(selector))
        name = str((role.get("metadata") or {}).get("name"))
        seen = seen | {name}
        for other_name, other in sorted(cluster_roles.items()):
            labels = (other.get("metadata") or {}).get("labels") or {}
            if other_name not in seen and any(s.matches(labels) for s in parsed):
                inherited = cls._aggregate(other, cluster_roles, seen)
                own.extend(r for r in inherited if r not in own)
        return own

    def role_rules(self, kind: str, namespace: str, name: str) -> list[Rule]:
        """The rules of one Role (``namespace``) or ClusterRole, aggregation resolved."""
        if self._dirty:
            self._rebuild()
        return list(self._rules.get((kind, namespace if kind == "Role" else "", name), []))

    def rules_for(self, user: UserInfo, namespace: str) -> list[Rule]:
        """Every rule granting ``user`` something in ``namespace`` ("" for cluster scope)."""
        if self._dirty:
            self._rebuild()
        found: list[Rule] = []
        for key in ("u:" + user.name, *("g:" + g for g in user.groups)):
            for grant in self._grants.get(key, ()):
                if grant.namespace and grant.namespace != namespace:
                    continue
                rules = self._rules.get((grant.role_kind, grant.role_namespace, grant.role_name))
                found.extend(rules or ())
        return found

    def allows(self, user: UserInfo, attrs: RequestAttributes) -> bool:
        if self._dirty:
            self._rebuild()
        key = (user.name, user.groups, attrs)
        decision = self._cache.get(key)
        if decision is None:
            namespace = attrs.namespace if attrs.resource else ""
            decision = any(rule_allows(r, attrs) for r in self.rules_for(user, namespace))
            if len(self._cache) >= CACHE_SIZE:
                self._cache.clear()
            self._cache[key] = decision
        return decision

    # -- following the objects ---------------------------------------------------------------

    async def _list(self, ctx: RestContext) -> int:
        items, revision = await ctx.objects.list_prefix(PREFIX)
        self._objects.clear()
        for kv in items:
            self._objects[_key_of(kv.key)] = decode(kv)
        self._dirty = True
        return revision

    async def _run(self, ctx: RestContext) -> None:
        while not ctx.stopping.is_set():
            try:
                revision = await self._list(ctx)
                self._synced.set()
                async for events in ctx.objects.watch(PREFIX, revision):
                    for event in events:
                        key = _object_key(event.object)
                        if event.type == "delete":
                            self._objects.pop(key, None)
                        else:
                            self._objects[key] = event.object
                    self._dirty = True
            except (ApiError, StoreError) as err:
                logger.debug("rbac: listing again", extra={"fields": {"error": str(err)}})
            self._synced.clear()
            await asyncio.sleep(RETRY_SECONDS)


def escalation_refusal(
    authorizer: RBACAuthorizer, user: UserInfo, obj: Object, namespace: str
) -> str | None:
    """Why ``user`` may not store the Role, ClusterRole or binding ``obj`` (escalation
    prevention: it may grant only what it holds, unless it may ``escalate`` or ``bind``)."""
    kind = str(obj.get("kind", ""))
    name = str((obj.get("metadata") or {}).get("name", ""))
    if kind in ("Role", "ClusterRole"):
        plural = _PLURALS[kind]
        escalate = RequestAttributes("escalate", GROUP, plural, "", namespace, name)
        if authorizer.allows(user, escalate):
            return None
        held = authorizer.rules_for(user, namespace)
        wanted = list(obj.get("rules") or [])
    elif kind in ("RoleBinding", "ClusterRoleBinding"):
        ref = obj.get("roleRef") or {}
        ref_kind, ref_name = str(ref.get("kind", "")), str(ref.get("name", ""))
        plural = _PLURALS.get(ref_kind, "")
        bind_ns = namespace if ref_kind == "Role" else ""
        if authorizer.allows(user, RequestAttributes("bind", GROUP, plural, "", bind_ns, ref_name)):
            return None
        wanted = authorizer.role_rules(ref_kind, bind_ns, ref_name)
        held = authorizer.rules_for(user, namespace)
    else:
        return None
    for rule in wanted:
        if not covers(held, rule, namespace):
            return (
                f"user {user.name!r} is attempting to grant RBAC permissions not currently held:"
                f" {rule}"
            )
    return None
