"""``POST pods/<name>/eviction``: a pod deletion that honours PodDisruptionBudgets.

As kube-apiserver's eviction REST: a pod that is not running (pending, finished) goes at once;
otherwise the one budget that selects it must allow a disruption. The allowance is taken from
the budget's status with an optimistic write (``disruptionsAllowed`` minus one, the pod noted
under ``disruptedPods``) before the pod is deleted, so two evictions cannot spend the same
allowance; the disruption controller recomputes the status from the pods afterwards. A refusal
is the 429 that ``kubectl drain`` waits on and retries; more than one budget for a pod is a
500, as upstream.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from k3py.cluster.api import status
from k3py.cluster.api.resources import by_kind
from k3py.cluster.api.selectors import LabelSelector
from k3py.cluster.server.rest.context import REST, RestContext
from k3py.cluster.server.rest.delete import (
    DeleteOptions,
    delete_options,
    delete_with_retries,
    success_status,
)
from k3py.cluster.server.rest.http import (
    RequestTarget,
    decode_object,
    json_response,
    media_type,
    read_body,
)

PODS = by_kind("v1", "Pod")
BUDGETS = by_kind("policy/v1", "PodDisruptionBudget")
_RETRIES = 8

Object = dict[str, Any]


def _selects(budget: Object, pod: Object) -> bool:
    selector = (budget.get("spec") or {}).get("selector")
    if selector is None:
        return False  # policy/v1: a nil selector selects nothing
    try:
        parsed = LabelSelector.from_object(selector)
    except status.ApiError:
        return False
    return parsed.matches((pod.get("metadata") or {}).get("labels") or {})


def _too_many(budget: Object, why: str) -> status.ApiError:
    name = (budget.get("metadata") or {}).get("name", "")
    return status.ApiError(
        429,
        "TooManyRequests",
        "Cannot evict pod as it would violate the pod's disruption budget.",
        causes=[status.Cause("DisruptionBudget", f"The disruption budget {name} {why}")],
    )


async def _spend_allowance(ctx: RestContext, namespace: str, pod: Object) -> None:
    """Take one disruption from the budget covering ``pod`` (429 when none is left)."""
    assert BUDGETS is not None
    pod_name = pod["metadata"]["name"]
    for _ in range(_RETRIES):
        budgets = [b for b in await ctx.objects.list_all(BUDGETS, namespace) if _selects(b, pod)]
        if not budgets:
            return
        if len(budgets) > 1:
            raise status.internal(
                "This pod has more than one PodDisruptionBudget, which the eviction subresource"
                " does not support."
            )
        budget = budgets[0]
        state = budget.get("status") or {}
        if int(state.get("observedGeneration", 0) or 0) < int(
            budget["metadata"].get("generation", 1) or 1
        ):
            raise _too_many(budget, "is still being processed by the server.")
        allowed = int(state.get("disruptionsAllowed") or 0)
        if allowed <= 0:
            raise _too_many(
                budget,
                f"needs {state.get('desiredHealthy', 0)} healthy pods and has"
                f" {state.get('currentHealthy', 0)} currently",
            )
        disrupted = dict(state.get("disruptedPods") or {})
        disrupted[pod_name] = ctx.now()
        budget["status"] = {**state, "disruptionsAllowed": allowed - 1, "disruptedPods": disrupted}
        try:
            await ctx.objects.update(BUDGETS, budget, int(budget["metadata"]["resourceVersion"]))
        except status.ApiError as err:
            if err.reason == "Conflict":
                continue
            raise
        return
    raise status.conflict("policy", "poddisruptionbudgets", "", "too many concurrent evictions")


async def evict_pod(ctx: RestContext, namespace: str, name: str, opts: DeleteOptions) -> Object:
    """Delete the pod if its budget allows (429 otherwise); the deleted or terminating pod."""
    assert PODS is not None
    pod = await ctx.objects.get(PODS, namespace, name)
    phase = (pod.get("status") or {}).get("phase")
    if phase == "Running" and not pod["metadata"].get("deletionTimestamp"):
        await _spend_allowance(ctx, namespace, pod)
    result, _ = await delete_with_retries(ctx, PODS, namespace, name, opts)
    return result


async def evict(request: web.Request, target: RequestTarget) -> web.Response:
    ctx = request.app[REST]
    assert target.name is not None
    assert target.namespace is not None
    raw = await read_body(request, ctx.settings.max_request_body_bytes)
    body = decode_object(raw, media_type(request)) if raw.strip() else {}
    opts = delete_options(request, body.get("deleteOptions"))
    result = await evict_pod(ctx, target.namespace, target.name, opts)
    return json_response(success_status(target.info, result), code=201)
