"""The object model pieces together, as the API server chains them for kubectl's requests."""

from __future__ import annotations

import copy
from typing import Any

from k3py.cluster.api.defaults import apply_defaults
from k3py.cluster.api.patch import apply_strategic_merge_patch
from k3py.cluster.api.validation import validate_create, validate_update
from tests.api.kinds import info

DEPLOYMENT = info("Deployment")
NODE = info("Node")

MANIFEST: dict[str, Any] = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "web", "namespace": "default", "uid": "u-1"},
    "spec": {
        "replicas": 2,
        "selector": {"matchLabels": {"app": "web"}},
        "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {
                "containers": [
                    {
                        "name": "web",
                        "image": "nginx:1.25",
                        "ports": [{"containerPort": 80}],
                        "resources": {"limits": {"memory": "128Mi"}},
                    }
                ]
            },
        },
    },
}


def _stored() -> dict[str, Any]:
    live = copy.deepcopy(MANIFEST)
    apply_defaults(DEPLOYMENT, live)
    assert validate_create(DEPLOYMENT, live) == []
    return live


def test_kubectl_set_image_patch_on_a_defaulted_deployment_stays_valid() -> None:
    live = _stored()
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "$setElementOrder/containers": [{"name": "web"}],
                    "containers": [{"image": "nginx:1.26", "name": "web"}],
                }
            }
        }
    }
    updated = apply_strategic_merge_patch(live, patch, DEPLOYMENT)
    apply_defaults(DEPLOYMENT, updated)
    assert validate_update(DEPLOYMENT, updated, live) == []
    container = updated["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "nginx:1.26"
    assert container["ports"] == [{"containerPort": 80, "protocol": "TCP"}]
    assert container["terminationMessagePolicy"] == "File"


def test_reapplying_the_manifest_changes_nothing() -> None:
    # A second `kubectl apply` of the same file sends the manifest's own values, which the
    # stored object already has: merging them in and defaulting again gives the same object.
    live = _stored()
    reapplied = apply_strategic_merge_patch(live, copy.deepcopy(MANIFEST), DEPLOYMENT)
    apply_defaults(DEPLOYMENT, reapplied)
    assert reapplied == live


def test_kubectl_scale_and_selector_change() -> None:
    live = _stored()
    scaled = apply_strategic_merge_patch(live, {"spec": {"replicas": 5}}, DEPLOYMENT)
    assert validate_update(DEPLOYMENT, scaled, live) == []
    moved = apply_strategic_merge_patch(
        live, {"spec": {"selector": {"matchLabels": {"app": "api"}}}}, DEPLOYMENT
    )
    fields = [c.field for c in validate_update(DEPLOYMENT, moved, live)]
    assert "spec.selector" in fields
    assert "spec.template.metadata.labels" in fields


def test_node_pod_cidr_fields_stay_in_step() -> None:
    node: dict[str, Any] = {"metadata": {"name": "n"}, "spec": {"podCIDR": "10.42.3.0/24"}}
    apply_defaults(NODE, node)
    assert node["spec"]["podCIDRs"] == ["10.42.3.0/24"]
    assert validate_create(NODE, node) == []
