"""A small kopf operator for the identity tests: each Widget gets a ConfigMap and a status.

Run as ``kopf run --standalone --namespace <ns> tests/identity/operator_app.py`` with
``KUBECONFIG`` naming a kubeconfig that holds only a ServiceAccount token and the cluster CA, as
an operator deployed in a cluster has. For a ``widgets.demo.k3py.io`` object it creates (or
updates) the ConfigMap ``<name>-config`` holding the widget's ``spec.colour`` and ``spec.size``,
owned by the widget, and sets ``status.configMap`` and ``status.phase``. The ConfigMap is
written through the official client logged in with the same kubeconfig, as kopf operators
commonly do; kopf itself watches, patches and posts Events through its own client.
"""

from __future__ import annotations

from typing import Any

import kopf
from kubernetes import client, config
from kubernetes.client.rest import ApiException

GROUP = "demo.k3py.io"
VERSION = "v1"
PLURAL = "widgets"


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # A namespace-scoped operator: no cluster-wide watching of CRDs and namespaces, so its Role
    # in its own namespace is all it needs (with --standalone: no peering objects either).
    settings.scanning.disabled = True
    # Quick retries: a test waits for the operator's reaction, not for production back-offs.
    settings.watching.reconnect_backoff = 1.0
    settings.networking.error_backoffs = [1, 1, 2]


def _config_map(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": f"{name}-config", "labels": {"app.kubernetes.io/managed-by": "kopf"}},
        "data": {"colour": str(spec.get("colour", "")), "size": str(spec.get("size", 1))},
    }


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
def reconcile(
    body: kopf.Body,
    spec: kopf.Spec,
    name: str,
    namespace: str | None,
    patch: kopf.Patch,
    logger: kopf.Logger,
    **_: Any,
) -> None:
    assert namespace is not None  # widgets are namespaced
    wanted = _config_map(name, dict(spec))
    kopf.adopt(wanted, owner=body)
    config.load_kube_config()  # the operator's own kubeconfig: the ServiceAccount token only
    with client.ApiClient() as api:
        core = client.CoreV1Api(api)
        try:
            core.create_namespaced_config_map(namespace, wanted)
            logger.info("created ConfigMap %s", wanted["metadata"]["name"])
        except ApiException as error:
            if error.status != 409:
                raise kopf.TemporaryError(f"ConfigMap: {error.reason}", delay=1) from error
            core.replace_namespaced_config_map(wanted["metadata"]["name"], namespace, wanted)
            logger.info("updated ConfigMap %s", wanted["metadata"]["name"])
    patch.status["configMap"] = wanted["metadata"]["name"]
    patch.status["phase"] = "Ready"
