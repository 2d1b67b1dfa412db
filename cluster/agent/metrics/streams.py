"""The tunnel streams the server opens for observability: ``usage`` and ``metrics``.

``usage`` answers with the latest usage summary (``kubectl top``); ``metrics`` with the agent's
Prometheus exposition (``/api/v1/nodes/NAME/proxy/metrics``). Both are one output chunk and the
end of the stream; the server authorizes the caller before it opens either.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from k3py.cluster.agent.metrics.registry import AgentMetrics
from k3py.cluster.agent.metrics.usage import UsageSampler
from k3py.cluster.agent.tunnel.client import StreamChannel
from k3py.cluster.api.metricseries import MetricsUnavailable
from k3py.cluster.api.tunnel import STDOUT
from k3py.cluster.api.usage import METRICS_STREAM, USAGE_STREAM

StreamKindHandler = Callable[[dict[str, Any], StreamChannel], Awaitable[None]]


def observability_streams(
    metrics: AgentMetrics, sampler: UsageSampler
) -> dict[str, StreamKindHandler]:
    async def usage(params: dict[str, Any], channel: StreamChannel) -> None:
        await channel.control("opened")
        await channel.output(STDOUT, sampler.summary())

    async def exposition(params: dict[str, Any], channel: StreamChannel) -> None:
        try:
            body = metrics.exposition()
        except MetricsUnavailable as err:
            status = {"code": 503, "reason": "ServiceUnavailable", "message": str(err)}
            await channel.control("error", status=status)
            return
        await channel.control("opened")
        await channel.output(STDOUT, body)

    return {USAGE_STREAM: usage, METRICS_STREAM: exposition}
