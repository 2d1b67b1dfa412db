"""The disruption controller: each PodDisruptionBudget's status, from the pods it selects.

It counts the selected pods (:func:`k3py.cluster.api.disruption.budget_status`), records the
generation it saw (an eviction waits until the status is current), keeps ``disruptedPods``
entries of pods an eviction took an allowance for until they are gone (or two minutes pass,
as upstream), subtracts those from the allowance, and sets the ``DisruptionAllowed``
condition. Pod changes re-check the budgets of their namespace.
"""

from __future__ import annotations

import logging
from typing import Any

from k3py.cluster.api.disruption import budget_status
from k3py.cluster.api.resources import by_kind
from k3py.cluster.api.selectors import LabelSelector
from k3py.cluster.api.status import ApiError
from k3py.cluster.client.events import timestamp
from k3py.cluster.server.controllers import podutil
from k3py.cluster.server.controllers.base import PODS, ControllerContext, QueueController

logger = logging.getLogger("k3py.controllers.disruption")

Object = dict[str, Any]
BUDGETS = by_kind("policy/v1", "PodDisruptionBudget")
DISRUPTED_TIMEOUT = 120.0


class DisruptionController(QueueController):
    name = "disruption"
    component = "controllermanager"

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        assert BUDGETS is not None
        self.budgets = ctx.informers.get(BUDGETS)
        self.pods = ctx.informers.get(PODS)
        self.budgets.add_handler(self.enqueue, lambda _o, n: self.enqueue(n), self.enqueue)
        self.pods.add_handler(self._pod_event, lambda _o, n: self._pod_event(n), self._pod_event)

    def _pod_event(self, pod: Object) -> None:
        namespace = podutil.meta(pod).get("namespace")
        for budget in self.budgets.list(namespace):
            self.enqueue(budget)

    def _selected(self, budget: Object) -> list[Object]:
        selector = (budget.get("spec") or {}).get("selector")
        if selector is None:
            return []
        try:
            parsed = LabelSelector.from_object(selector)
        except ApiError:
            return []
        namespace = podutil.meta(budget).get("namespace")
        return [
            p
            for p in self.pods.list(namespace)
            if parsed.matches(podutil.meta(p).get("labels") or {})
        ]

    async def reconcile(self, key: str) -> float | None:
        assert BUDGETS is not None
        budget = self.budgets.get_by_key(key)
        if budget is None or podutil.is_terminating(budget):
            return None
        pods = self._selected(budget)
        old = budget.get("status") or {}
        status: Object = {**old, **budget_status(budget, pods)}
        now = self.clock.now()
        live = {podutil.name_of(p) for p in pods if not podutil.is_terminating(p)}
        disrupted: dict[str, str] = {}
        wait: float | None = None
        for name, when in (old.get("disruptedPods") or {}).items():
            since = podutil.parse_time(when) or now
            left = DISRUPTED_TIMEOUT - (now - since).total_seconds()
            if name in live and left > 0:
                disrupted[name] = when
                wait = left if wait is None else min(wait, left)
        status["disruptionsAllowed"] = max(0, status["disruptionsAllowed"] - len(disrupted))
        if disrupted:
            status["disruptedPods"] = disrupted
        else:
            status.pop("disruptedPods", None)
        status["observedGeneration"] = int(podutil.meta(budget).get("generation", 1) or 1)
        allowed = status["disruptionsAllowed"] > 0
        condition = {
            "type": "DisruptionAllowed",
            "status": "True" if allowed else "False",
            "reason": "SufficientPods" if allowed else "InsufficientPods",
            "message": "",
            "observedGeneration": status["observedGeneration"],
            "lastTransitionTime": timestamp(self.clock),
        }
        previous = next(
            (c for c in old.get("conditions") or [] if c.get("type") == "DisruptionAllowed"), None
        )
        if previous is not None and previous.get("status") == condition["status"]:
            condition["lastTransitionTime"] = previous.get("lastTransitionTime")
        status["conditions"] = [condition]
        if status != old:
            updated = await self.api.update(
                BUDGETS, {**budget, "status": status}, subresource="status"
            )
            self.budgets.assume(updated)
        return wait
