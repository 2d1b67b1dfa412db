"""Observability of the agent: Prometheus metrics, usage summaries, the local health endpoint.

:mod:`.registry` owns the agent's registry (kubelet's metric names where the kubelet has one);
:mod:`.runtime` times every container runtime call; :mod:`.nodestats` reads the node's CPU,
memory, disk and network from ``/proc``; :mod:`.usage` samples CPU and memory of the node and
of each container for ``kubectl top``; :mod:`.streams` answers the server's ``usage`` and
``metrics`` tunnel streams; :mod:`.healthz` serves ``/healthz`` on a local port for the board's
supervisor.
"""
