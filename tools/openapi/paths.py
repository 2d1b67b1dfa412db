"""The REST operations of each served group/version, as the OpenAPI documents list them.

Derived from :data:`k3py.cluster.api.resources.RESOURCES` alone: collection and item paths for
each resource (namespaced or cluster-scoped, plus the list across all namespaces), and the
subresources whose bodies are API objects (``status``, ``scale``, ``binding``, ``eviction``,
``ephemeralcontainers``, ``finalize``). Every operation carries ``x-kubernetes-action`` and
``x-kubernetes-group-version-kind``; every write declares ``dryRun``, ``fieldManager`` and
``fieldValidation``, which is what tells kubectl that this server validates fields itself.
The streaming subresources (``log``, ``exec``, ``attach``, ``portforward``, ``proxy``) are not
described. The output is neutral: :mod:`.documents` renders it as v2 or v3.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from k3py.cluster.api.resources import ResourceInfo, resources_in

META = "io.k8s.apimachinery.pkg.apis.meta.v1"
STATUS = f"{META}.Status"
DELETE_OPTIONS = f"{META}.DeleteOptions"
WATCH_EVENT = f"{META}.WatchEvent"
PATCH = f"{META}.Patch"

# Query parameters: name -> (OpenAPI type, description).
PARAMETERS: dict[str, tuple[str, str]] = {
    "pretty": ("string", "If 'true', then the output is pretty printed."),
    "dryRun": (
        "string",
        "When present, indicates that modifications should not be persisted. Valid values "
        "are: - All: all dry run stages will be processed",
    ),
    "fieldManager": (
        "string",
        "fieldManager is a name associated with the actor or entity that is making these changes.",
    ),
    "fieldValidation": (
        "string",
        "fieldValidation instructs the server on how to handle objects in the request "
        "containing unknown or duplicate fields. Valid values are: - Ignore: silently drop "
        "them. - Warn: accept the object and send a warning for each such field. - Strict: "
        "fail the request with a BadRequest error listing them.",
    ),
    "force": (
        "boolean",
        'Force is going to "force" Apply requests. It must be unset for non-apply patch requests.',
    ),
    "labelSelector": (
        "string",
        "A selector to restrict the list of returned objects by their labels. Defaults to "
        "everything.",
    ),
    "fieldSelector": (
        "string",
        "A selector to restrict the list of returned objects by their fields. Defaults to "
        "everything.",
    ),
    "limit": ("integer", "limit is a maximum number of responses to return for a list call."),
    "continue": (
        "string",
        "The continue option should be set when retrieving more results from the server, "
        "with the value of the previous list's metadata.continue.",
    ),
    "resourceVersion": (
        "string",
        "resourceVersion sets a constraint on what resource versions a request may be served from.",
    ),
    "resourceVersionMatch": (
        "string",
        "resourceVersionMatch determines how resourceVersion is applied to list calls.",
    ),
    "watch": (
        "boolean",
        "Watch for changes to the described resources and return them as a stream of add, "
        "update, and remove notifications. Specify resourceVersion.",
    ),
    "allowWatchBookmarks": (
        "boolean",
        'allowWatchBookmarks requests watch events with type "BOOKMARK".',
    ),
    "sendInitialEvents": (
        "boolean",
        "With watch, start the stream with synthetic events for the current state of the "
        "collection.",
    ),
    "timeoutSeconds": (
        "integer",
        "Timeout for the list/watch call. This limits the duration of the call, regardless of "
        "any activity or inactivity.",
    ),
    "gracePeriodSeconds": (
        "integer",
        "The duration in seconds before the object should be deleted. Zero means delete "
        "immediately.",
    ),
    "orphanDependents": (
        "boolean",
        "Deprecated: please use the PropagationPolicy. Should the dependent objects be orphaned.",
    ),
    "propagationPolicy": (
        "string",
        "Whether and how garbage collection will be performed: 'Orphan', 'Background' or "
        "'Foreground'.",
    ),
}

_LIST = (
    "allowWatchBookmarks",
    "continue",
    "fieldSelector",
    "labelSelector",
    "limit",
    "resourceVersion",
    "resourceVersionMatch",
    "sendInitialEvents",
    "timeoutSeconds",
    "watch",
    "pretty",
)
_WRITE = ("dryRun", "fieldManager", "fieldValidation", "pretty")
_PATCH = ("dryRun", "fieldManager", "fieldValidation", "force", "pretty")
_DELETE = ("dryRun", "gracePeriodSeconds", "orphanDependents", "propagationPolicy", "pretty")

PATCH_TYPES = (
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
)


@dataclass(frozen=True)
class Operation:
    """One HTTP method on one path, in neutral form."""

    path: str
    method: str  # get, post, put, patch, delete
    action: str  # x-kubernetes-action
    operation_id: str
    description: str
    gvk: tuple[str, str, str]  # group, version, kind
    query: tuple[str, ...]
    path_params: tuple[str, ...]
    body: str | None  # definition of the request body
    responses: tuple[tuple[int, str], ...]  # (code, definition)
    tag: str


def prefix(group: str, version: str) -> str:
    """``api/v1`` for the core group, ``apis/<group>/<version>`` otherwise."""
    return f"api/{version}" if group == "" else f"apis/{group}/{version}"


def _camel_group(group: str, version: str) -> str:
    name = group.split(".")[0] if group else "core"
    return name[:1].upper() + name[1:] + version[:1].upper() + version[1:]


def tag(group: str, version: str) -> str:
    return f"{group.split('.')[0] if group else 'core'}_{version}"


class _Builder:
    def __init__(self, info: ResourceInfo, definition: str) -> None:
        self.info = info
        self.definition = definition
        self.gv = _camel_group(info.group, info.version)
        self.base = "/" + prefix(info.group, info.version)
        self.ops: list[Operation] = []

    def add(
        self,
        path: str,
        method: str,
        action: str,
        verb_id: str,
        description: str,
        *,
        namespaced: bool,
        query: tuple[str, ...],
        body: str | None,
        responses: tuple[tuple[int, str], ...],
        gvk: tuple[str, str, str] | None = None,
    ) -> None:
        params = tuple(name for name in ("namespace", "name") if "{" + name + "}" in path)
        scope = "Namespaced" if namespaced else ""
        self.ops.append(
            Operation(
                path=path,
                method=method,
                action=action,
                operation_id=verb_id.replace("%s", f"{self.gv}{scope}"),
                description=description,
                gvk=gvk or (self.info.group, self.info.version, self.info.kind),
                query=query,
                path_params=params,
                body=body,
                responses=responses,
                tag=tag(self.info.group, self.info.version),
            )
        )

    def read_replace_patch(
        self,
        path: str,
        name: str,
        what: str,
        body: str,
        *,
        verbs: Collection[str] = ("get", "update", "patch"),
        gvk: tuple[str, str, str] | None = None,
    ) -> None:
        """The get, put and patch of one object (an item or a subresource), those in ``verbs``."""
        ns = self.info.namespaced
        if "get" in verbs:
            self.add(
                path,
                "get",
                "get",
                f"read%s{name}",
                f"read {what}",
                namespaced=ns,
                query=("pretty",),
                body=None,
                responses=((200, body),),
                gvk=gvk,
            )
        if "update" in verbs:
            self.add(
                path,
                "put",
                "put",
                f"replace%s{name}",
                f"replace {what}",
                namespaced=ns,
                query=_WRITE,
                body=body,
                responses=((200, body), (201, body)),
                gvk=gvk,
            )
        if "patch" in verbs:
            self.add(
                path,
                "patch",
                "patch",
                f"patch%s{name}",
                f"partially update {what}",
                namespaced=ns,
                query=_PATCH,
                body=PATCH,
                responses=((200, body), (201, body)),
                gvk=gvk,
            )


def operations(info: ResourceInfo, definitions: dict[tuple[str, str, str], str]) -> list[Operation]:
    """Every operation on one resource; ``definitions`` maps (group, version, kind) to names."""
    key = (info.group, info.version, info.kind)
    kind_def = definitions[key]
    list_def = definitions.get((info.group, info.version, info.list_kind), kind_def)
    b = _Builder(info, kind_def)
    kind, verbs, ns = info.kind, set(info.verbs), info.namespaced
    collection = (
        f"{b.base}/namespaces/{{namespace}}/{info.plural}" if ns else f"{b.base}/{info.plural}"
    )
    item = f"{collection}/{{name}}"
    created = ((200, kind_def), (201, kind_def), (202, kind_def))

    if "list" in verbs:
        b.add(
            collection,
            "get",
            "list",
            f"list%s{kind}",
            f"list or watch objects of kind {kind}",
            namespaced=ns,
            query=_LIST,
            body=None,
            responses=((200, list_def),),
        )
        if ns:
            b.add(
                f"{b.base}/{info.plural}",
                "get",
                "list",
                f"list{b.gv}{kind}ForAllNamespaces",
                f"list or watch objects of kind {kind}",
                namespaced=False,
                query=_LIST,
                body=None,
                responses=((200, list_def),),
            )
    if "create" in verbs:
        b.add(
            collection,
            "post",
            "post",
            f"create%s{kind}",
            f"create a {kind}",
            namespaced=ns,
            query=_WRITE,
            body=kind_def,
            responses=created,
        )
    if "deletecollection" in verbs:
        b.add(
            collection,
            "delete",
            "deletecollection",
            f"delete{b.gv}Collection" + ("Namespaced" if ns else "") + kind,
            f"delete collection of {kind}",
            namespaced=False,
            query=_LIST + _DELETE[:-1],
            body=DELETE_OPTIONS,
            responses=((200, STATUS),),
        )
    b.read_replace_patch(item, kind, f"the specified {kind}", kind_def, verbs=verbs)
    if "delete" in verbs:
        b.add(
            item,
            "delete",
            "delete",
            f"delete%s{kind}",
            f"delete a {kind}",
            namespaced=ns,
            query=_DELETE,
            body=DELETE_OPTIONS,
            responses=((200, STATUS), (202, STATUS)),
        )

    for sub in info.subresources:
        _subresource(b, sub, item, definitions)
    return b.ops


def _subresource(
    b: _Builder, sub: str, item: str, definitions: dict[tuple[str, str, str], str]
) -> None:
    info, ns = b.info, b.info.namespaced
    kind = info.kind
    path = f"{item}/{sub}"
    title = sub[:1].upper() + sub[1:]
    if sub in ("status", "ephemeralcontainers", "scale"):
        gvk = ("autoscaling", "v1", "Scale") if sub == "scale" else None
        body = definitions[gvk] if gvk else b.definition
        b.read_replace_patch(
            path, f"{kind}{title}", f"{sub} of the specified {kind}", body, gvk=gvk
        )
    elif sub in ("binding", "eviction"):
        gvk = ("", "v1", "Binding") if sub == "binding" else ("policy", "v1", "Eviction")
        body = definitions[gvk]
        b.add(
            path,
            "post",
            "post",
            f"create%s{kind}{title}",
            f"create {sub} of a {kind}",
            namespaced=ns,
            query=_WRITE,
            body=body,
            responses=((200, body), (201, body), (202, body)),
            gvk=gvk,
        )
    elif sub == "finalize":
        what = f"finalize of the specified {kind}"
        b.read_replace_patch(path, f"{kind}{title}", what, b.definition, verbs=("update",))


def group_version_operations(
    group: str, version: str, definitions: dict[tuple[str, str, str], str]
) -> list[Operation]:
    """All operations of one served group/version, in registry order."""
    ops: list[Operation] = []
    for info in resources_in(group, version):
        ops.extend(operations(info, definitions))
    return ops
