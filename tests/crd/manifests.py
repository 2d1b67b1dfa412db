"""CustomResourceDefinition manifests for tests and benchmarks that need a kind of their own."""

from __future__ import annotations

from typing import Any


def namespaced_crd(
    group: str, kind: str, spec: dict[str, Any], status: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A namespaced kind served at ``group``/v1 with a status subresource.

    ``spec`` holds the properties of the object's spec; the status takes any field unless
    ``status`` gives its schema.
    """
    plural = f"{kind.lower()}s"
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": plural, "singular": kind.lower(), "kind": kind},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {"type": "object", "properties": spec},
                                "status": status
                                or {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                            },
                        }
                    },
                }
            ],
        },
    }
