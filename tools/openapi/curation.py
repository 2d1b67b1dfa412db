"""What the schema generator adds to the Python client's models: facts those models lose.

The official Python client's models carry field names, types, descriptions and required fields,
but flatten several Kubernetes types (IntOrString and RawExtension become ``object``, Quantity
becomes ``str``, MicroTime becomes ``datetime``) and drop the strategic-merge-patch metadata and
list and map types. This module restores them as plain tables keyed by Python model class and
attribute; the facts come from Kubernetes' published OpenAPI spec (``api/openapi-spec`` in
kubernetes/kubernetes) and the Go types' struct tags. Only the generator reads it.
"""

from __future__ import annotations

from k3py.cluster.api import updateplan

META = "io.k8s.apimachinery.pkg.apis.meta.v1"
TIME = f"{META}.Time"
MICRO_TIME = f"{META}.MicroTime"
FIELDS_V1 = f"{META}.FieldsV1"
RAW_EXTENSION = "io.k8s.apimachinery.pkg.runtime.RawExtension"
INT_OR_STRING = "io.k8s.apimachinery.pkg.util.intstr.IntOrString"
QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"

# Python model classes that live in apimachinery's meta/v1 package rather than in an API group.
META_CLASSES = frozenset(
    {
        "V1APIGroup",
        "V1APIGroupList",
        "V1APIResource",
        "V1APIResourceList",
        "V1APIVersions",
        "V1Condition",
        "V1DeleteOptions",
        "V1GroupVersionForDiscovery",
        "V1LabelSelector",
        "V1LabelSelectorRequirement",
        "V1ListMeta",
        "V1ManagedFieldsEntry",
        "V1ObjectMeta",
        "V1OwnerReference",
        "V1Preconditions",
        "V1ServerAddressByClientCIDR",
        "V1Status",
        "V1StatusCause",
        "V1StatusDetails",
        "V1WatchEvent",
    }
)

# Core types that API groups embed but no served core kind reaches (PodTemplate is not served):
# walked as core roots first so that apps/batch do not claim them.
EXTRA_CORE_ROOTS = ("V1PodTemplateSpec",)

# Kinds served as subresource bodies, with the group that owns their schema.
# k3py's own kinds: (group, version, kind, the function returning their definitions).
HANDWRITTEN_KINDS = (
    (updateplan.GROUP, updateplan.VERSION, updateplan.KIND, updateplan.definitions),
)
SUBRESOURCE_KINDS = (
    ("autoscaling", "v1", "Scale"),  # deployments/scale, replicasets/scale
    ("policy", "v1", "Eviction"),  # pods/eviction
)

# Meta kinds that appear in every group's documents.
META_ROOTS = (
    "V1Status",
    "V1DeleteOptions",
    "V1WatchEvent",
    "V1APIResourceList",
    "V1APIGroupList",
    "V1APIVersions",
)

# Fields whose Python type lost the Kubernetes type: (class, attribute) -> definition.
TYPED_FIELDS: dict[tuple[str, str], str] = {
    ("V1HTTPGetAction", "port"): INT_OR_STRING,
    ("V1TCPSocketAction", "port"): INT_OR_STRING,
    ("V1ServicePort", "target_port"): INT_OR_STRING,
    ("V1RollingUpdateDeployment", "max_surge"): INT_OR_STRING,
    ("V1RollingUpdateDeployment", "max_unavailable"): INT_OR_STRING,
    ("V1RollingUpdateDaemonSet", "max_surge"): INT_OR_STRING,
    ("V1RollingUpdateDaemonSet", "max_unavailable"): INT_OR_STRING,
    ("V1PodDisruptionBudgetSpec", "max_unavailable"): INT_OR_STRING,
    ("V1PodDisruptionBudgetSpec", "min_available"): INT_OR_STRING,
    ("V1WatchEvent", "object"): RAW_EXTENSION,
    ("V1ControllerRevision", "data"): RAW_EXTENSION,
    ("V1ManagedFieldsEntry", "fields_v1"): FIELDS_V1,
    ("V1EmptyDirVolumeSource", "size_limit"): QUANTITY,
    ("V1ResourceFieldSelector", "divisor"): QUANTITY,
    ("CoreV1Event", "event_time"): MICRO_TIME,
    ("CoreV1EventSeries", "last_observed_time"): MICRO_TIME,
    ("V1LeaseSpec", "acquire_time"): MICRO_TIME,
    ("V1LeaseSpec", "renew_time"): MICRO_TIME,
}

# Maps whose values are Quantities (Go's core/v1 ResourceList).
QUANTITY_MAPS = frozenset(
    {
        ("V1ResourceRequirements", "limits"),
        ("V1ResourceRequirements", "requests"),
        ("V1VolumeResourceRequirements", "limits"),
        ("V1VolumeResourceRequirements", "requests"),
        ("V1NodeStatus", "capacity"),
        ("V1NodeStatus", "allocatable"),
        ("V1PodSpec", "overhead"),
        ("V1ContainerStatus", "allocated_resources"),
    }
)

# Maps whose values are base64 bytes ("format": "byte").
BYTE_MAPS = frozenset({("V1Secret", "data"), ("V1ConfigMap", "binary_data")})

# Strategic merge patch metadata (Go struct tags patchStrategy / patchMergeKey), by the
# definition's short name and the JSON field name. kubectl computes apply patches from these.
PATCH_META: dict[tuple[str, str], tuple[str, str | None]] = {
    ("ObjectMeta", "finalizers"): ("merge", None),
    ("ObjectMeta", "ownerReferences"): ("merge", "uid"),
    ("PodSpec", "volumes"): ("merge,retainKeys", "name"),
    ("PodSpec", "initContainers"): ("merge", "name"),
    ("PodSpec", "containers"): ("merge", "name"),
    ("PodSpec", "ephemeralContainers"): ("merge", "name"),
    ("PodSpec", "imagePullSecrets"): ("merge", "name"),
    ("PodSpec", "hostAliases"): ("merge", "ip"),
    ("PodSpec", "topologySpreadConstraints"): ("merge", "topologyKey"),
    ("PodSpec", "schedulingGates"): ("merge", "name"),
    ("PodSpec", "resourceClaims"): ("merge,retainKeys", "name"),
    ("Container", "ports"): ("merge", "containerPort"),
    ("Container", "env"): ("merge", "name"),
    ("Container", "volumeMounts"): ("merge", "mountPath"),
    ("Container", "volumeDevices"): ("merge", "devicePath"),
    ("EphemeralContainer", "ports"): ("merge", "containerPort"),
    ("EphemeralContainer", "env"): ("merge", "name"),
    ("EphemeralContainer", "volumeMounts"): ("merge", "mountPath"),
    ("EphemeralContainer", "volumeDevices"): ("merge", "devicePath"),
    ("ContainerStatus", "volumeMounts"): ("merge", "mountPath"),
    ("ContainerStatus", "allocatedResourcesStatus"): ("merge", "name"),
    ("PodStatus", "conditions"): ("merge", "type"),
    ("PodStatus", "podIPs"): ("merge", "ip"),
    ("PodStatus", "hostIPs"): ("merge", "ip"),
    ("PodStatus", "resourceClaimStatuses"): ("merge,retainKeys", "name"),
    ("NodeSpec", "podCIDRs"): ("merge", None),
    ("NodeStatus", "conditions"): ("merge", "type"),
    ("NodeStatus", "addresses"): ("merge", "type"),
    ("NamespaceStatus", "conditions"): ("merge", "type"),
    ("ServiceSpec", "ports"): ("merge", "port"),
    ("ServiceStatus", "conditions"): ("merge", "type"),
    ("ServiceAccount", "secrets"): ("merge", "name"),
    ("DeploymentSpec", "strategy"): ("retainKeys", None),
    ("DeploymentStatus", "conditions"): ("merge", "type"),
    ("ReplicaSetStatus", "conditions"): ("merge", "type"),
    ("DaemonSetStatus", "conditions"): ("merge", "type"),
    ("JobStatus", "conditions"): ("merge", "type"),
}

# Server-side-apply list keys where they are more than the patch merge key.
LIST_MAP_KEYS: dict[tuple[str, str], tuple[str, ...]] = {
    ("Container", "ports"): ("containerPort", "protocol"),
    ("EphemeralContainer", "ports"): ("containerPort", "protocol"),
    ("ServiceSpec", "ports"): ("port", "protocol"),
    ("PodSpec", "topologySpreadConstraints"): ("topologyKey", "whenUnsatisfiable"),
}

# Lists that are sets of scalars.
LIST_SETS = frozenset({("ObjectMeta", "finalizers"), ("NodeSpec", "podCIDRs")})

# Structs replaced as a whole by apply (Go's +structType=atomic).
ATOMIC_STRUCTS = frozenset(
    {
        "ConfigMapKeySelector",
        "LabelSelector",
        "LocalObjectReference",
        "NodeSelector",
        "NodeSelectorTerm",
        "ObjectFieldSelector",
        "ObjectReference",
        "ResourceFieldSelector",
        "SecretKeySelector",
        "TypedLocalObjectReference",
    }
)

# Maps replaced as a whole by apply (Go's +mapType=atomic).
ATOMIC_MAPS = frozenset({("ServiceSpec", "selector"), ("ReplicaSetSpec", "selector")})

# Definitions with no Python model: apimachinery's scalar-like types and meta.k8s.io's Table.
HANDWRITTEN: dict[str, dict[str, object]] = {
    TIME: {
        "description": (
            "Time is a wrapper around time.Time which supports correct marshaling to YAML and "
            "JSON. Wrappers are provided for many of the factory methods that the time package "
            "offers."
        ),
        "type": "string",
        "format": "date-time",
    },
    MICRO_TIME: {
        "description": "MicroTime is version of Time with microsecond level precision.",
        "type": "string",
        "format": "date-time",
    },
    FIELDS_V1: {
        "description": (
            "FieldsV1 stores a set of fields in a data structure like a Trie, in JSON format."
        ),
        "type": "object",
    },
    RAW_EXTENSION: {
        "description": (
            "RawExtension is used to hold extensions in external versions: an embedded object "
            "of any kind, kept as it was received."
        ),
        "type": "object",
    },
    INT_OR_STRING: {
        "description": (
            "IntOrString is a type that can hold an int32 or a string. When used in JSON or YAML "
            "marshalling and unmarshalling, it produces or consumes the inner type."
        ),
        "type": "string",
        "format": "int-or-string",
    },
    QUANTITY: {
        "description": (
            "Quantity is a fixed-point representation of a number, serialized as a string: "
            "<signedNumber><suffix> where the suffix is a binary SI suffix (Ki, Mi, Gi, Ti, Pi, "
            "Ei), a decimal SI suffix (n, u, m, '', k, M, G, T, P, E) or a decimal exponent (e3, "
            "E-6). Examples: 100m, 1.5Gi, 2e3."
        ),
        "type": "string",
    },
    f"{META}.Patch": {
        "description": (
            "Patch is provided to give a concrete name and type to the Kubernetes PATCH request "
            "body."
        ),
        "type": "object",
    },
}


def _ref(name: str, description: str) -> dict[str, object]:
    return {"$ref": name, "description": description}


def _string(description: str) -> dict[str, object]:
    return {"type": "string", "description": description}


_API_VERSION = _string(
    "APIVersion defines the versioned schema of this representation of an object. Servers "
    "should convert recognized schemas to the latest internal value, and may reject "
    "unrecognized values."
)
_KIND = _string(
    "Kind is a string value representing the REST resource this object represents. Servers "
    "may infer this from the endpoint the client submits requests to. Cannot be updated. In "
    "CamelCase."
)

# meta.k8s.io/v1 Table and PartialObjectMetadata: what `kubectl get` asks for; the Python client
# has no models for them.
HANDWRITTEN.update(
    {
        f"{META}.Table": {
            "description": "Table is a tabular representation of a set of API resources.",
            "type": "object",
            "required": ["columnDefinitions", "rows"],
            "properties": {
                "apiVersion": _API_VERSION,
                "kind": _KIND,
                "metadata": _ref(f"{META}.ListMeta", "Standard list metadata."),
                "columnDefinitions": {
                    "description": (
                        "columnDefinitions describes each column in the returned items array."
                    ),
                    "type": "array",
                    "items": {"$ref": f"{META}.TableColumnDefinition"},
                },
                "rows": {
                    "description": "rows is the list of items in the table.",
                    "type": "array",
                    "items": {"$ref": f"{META}.TableRow"},
                },
            },
            "x-kubernetes-group-version-kind": [
                {"group": "meta.k8s.io", "kind": "Table", "version": "v1"}
            ],
        },
        f"{META}.TableColumnDefinition": {
            "description": (
                "TableColumnDefinition contains information about a column returned in the Table."
            ),
            "type": "object",
            "required": ["name", "type", "format", "description", "priority"],
            "properties": {
                "name": _string("name is a human readable name for the column."),
                "type": _string(
                    "type is an OpenAPI type definition for this column, such as number, "
                    "integer, string, or array."
                ),
                "format": _string(
                    "format is an optional OpenAPI type modifier for this column, such as name "
                    "or date-time."
                ),
                "description": _string(
                    "description is a human readable description of this column."
                ),
                "priority": {
                    "description": (
                        "priority is an integer defining the relative importance of this "
                        "column compared to others. Lower numbers are considered higher "
                        "priority; columns with priority above 0 are shown in wide output."
                    ),
                    "type": "integer",
                    "format": "int32",
                },
            },
        },
        f"{META}.TableRow": {
            "description": "TableRow is an individual row in a table.",
            "type": "object",
            "required": ["cells"],
            "properties": {
                "cells": {
                    "description": (
                        "cells will be as wide as the column definitions array and may contain "
                        "strings, numbers, booleans, simple maps, lists, or null."
                    ),
                    "type": "array",
                    "items": {"type": "object"},
                },
                "conditions": {
                    "description": "conditions describe additional status of a row.",
                    "type": "array",
                    "items": {"$ref": f"{META}.TableRowCondition"},
                },
                "object": _ref(
                    RAW_EXTENSION,
                    "This field contains the requested additional information about each "
                    "object, by the includeObject policy: None, Metadata (the default) or "
                    "Object.",
                ),
            },
        },
        f"{META}.TableRowCondition": {
            "description": (
                "TableRowCondition allows a row to be marked with additional information."
            ),
            "type": "object",
            "required": ["type", "status"],
            "properties": {
                "type": _string("Type of row condition. The only defined value is 'Completed'."),
                "status": _string("Status of the condition, one of True, False, Unknown."),
                "reason": _string(
                    "(brief) machine readable reason for the condition's last transition."
                ),
                "message": _string(
                    "Human readable message indicating details about last transition."
                ),
            },
        },
        f"{META}.PartialObjectMetadata": {
            "description": (
                "PartialObjectMetadata is a generic representation of any object with ObjectMeta."
            ),
            "type": "object",
            "properties": {
                "apiVersion": _API_VERSION,
                "kind": _KIND,
                "metadata": _ref(f"{META}.ObjectMeta", "Standard object's metadata."),
            },
            "x-kubernetes-group-version-kind": [
                {"group": "meta.k8s.io", "kind": "PartialObjectMetadata", "version": "v1"}
            ],
        },
        f"{META}.PartialObjectMetadataList": {
            "description": (
                "PartialObjectMetadataList contains a list of "
                "objects containing only their metadata."
            ),
            "type": "object",
            "required": ["items"],
            "properties": {
                "apiVersion": _API_VERSION,
                "kind": _KIND,
                "metadata": _ref(f"{META}.ListMeta", "Standard list metadata."),
                "items": {
                    "description": "items contains each of the included items.",
                    "type": "array",
                    "items": {"$ref": f"{META}.PartialObjectMetadata"},
                },
            },
            "x-kubernetes-group-version-kind": [
                {"group": "meta.k8s.io", "kind": "PartialObjectMetadataList", "version": "v1"}
            ],
        },
    }
)

# Definitions in every document, whatever paths reference them.
ALWAYS_INCLUDED = (
    f"{META}.Table",
    f"{META}.PartialObjectMetadata",
    f"{META}.PartialObjectMetadataList",
    f"{META}.Patch",
    INT_OR_STRING,
    QUANTITY,
    TIME,
)
