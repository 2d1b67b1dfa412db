"""Observability of the server: Prometheus metrics, the resource metrics API, health checks.

:mod:`.apiserver` owns the registry and request metrics served at ``/metrics``;
:mod:`.datastore` times the datastore; :mod:`.controlplane` counts the scheduler's and the
controllers' work through the :mod:`.observer` protocol (which the control plane imports without
the metrics library); :mod:`.resource_api` serves ``metrics.k8s.io/v1beta1`` from the agents'
usage summaries; :mod:`.health` answers ``/livez`` and ``/readyz`` with their checks. Series are
plain values (:mod:`k3py.cluster.api.metricseries`); prometheus_client is loaded at the first
scrape.
"""
