"""Resource usage as the agent reports it to the server, and as ``metrics.k8s.io`` shows it.

The agent samples its node (from ``/proc``) and each running container (from the runtime's
statistics) every few seconds and keeps one small summary; the server asks for it over the
node's tunnel (stream kind :data:`USAGE_STREAM`) when ``kubectl top`` lists metrics, and for
the agent's Prometheus text (stream kind :data:`METRICS_STREAM`) when someone scrapes
``/api/v1/nodes/NAME/proxy/metrics``. The summary is JSON::

    {"node": {"timestamp": "…Z", "window": 15.0, "cpu": <nanocores>, "memory": <bytes>},
     "pods": [{"namespace": "…", "name": "…", "timestamp": "…Z", "window": 15.0,
               "containers": [{"name": "…", "cpu": <nanocores>, "memory": <bytes>}]}]}

``memory`` is the working set (usage less inactive file pages), which is what the kubelet
reports and what the OOM killer counts.
"""

from __future__ import annotations

USAGE_STREAM = "usage"
METRICS_STREAM = "metrics"


def cpu_quantity(nanocores: float) -> str:
    """CPU in the form metrics-server writes (``12345n``)."""
    return f"{max(0, round(nanocores))}n"


def memory_quantity(size: float) -> str:
    """Memory in the form metrics-server writes (``1234Ki``)."""
    return f"{max(0, round(size / 1024))}Ki"


def window_text(seconds: float) -> str:
    """A window as a Go duration (``15s``, ``15.5s``)."""
    return f"{seconds:g}s"
