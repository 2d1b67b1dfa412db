"""The Job controller: runs pods to ``completions`` with ``parallelism``, within limits.

Active pods are kept at ``min(parallelism, completions - succeeded)``. Failed pods count
against ``backoffLimit``; after each failure the next pod waits an exponential back-off (10 s,
20 s, … at most 6 min, as kube-controller-manager). Past the limit, or past
``activeDeadlineSeconds`` from the start, the Job fails (``FailureTarget`` then ``Failed``, with
reason ``BackoffLimitExceeded`` or ``DeadlineExceeded``) and its running pods are deleted; at
enough successes it completes (``SuccessCriteriaMet`` then ``Complete``) — the conditions that
``kubectl wait --for=condition=complete`` watches. ``suspend`` deletes active pods.
"""

from __future__ import annotations

import datetime
import logging
from typing import Any

from k3py.cluster.client.events import timestamp
from k3py.cluster.server.controllers import podcontrol, podutil
from k3py.cluster.server.controllers.base import JOBS, PODS, ControllerContext, QueueController

logger = logging.getLogger("k3py.controllers.job")

Object = dict[str, Any]


def _job_condition(kind: str, reason: str, message: str, stamp: str) -> Object:
    return {
        "type": kind,
        "status": "True",
        "lastProbeTime": stamp,
        "lastTransitionTime": stamp,
        "reason": reason,
        "message": message,
    }


def finished(job: Object) -> bool:
    return any(
        c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
        for c in (job.get("status") or {}).get("conditions") or []
    )


def last_failure(pods: list[Object]) -> datetime.datetime | None:
    times = []
    for pod in pods:
        if podutil.phase(pod) != "Failed":
            continue
        for status in (pod.get("status") or {}).get("containerStatuses") or []:
            ended = podutil.parse_time(
                ((status.get("state") or {}).get("terminated") or {}).get("finishedAt")
            )
            if ended is not None:
                times.append(ended)
        stamp = podutil.parse_time(podutil.meta(pod).get("creationTimestamp"))
        if stamp is not None and not times:
            times.append(stamp)
    return max(times) if times else None


class JobController(QueueController):
    name = "job"
    component = "job-controller"

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.jobs = ctx.informers.get(JOBS)
        self.pods = ctx.informers.get(PODS)
        self.jobs.add_handler(self.enqueue, lambda _o, n: self.enqueue(n), self.enqueue)
        self.pods.add_handler(self._pod_event, lambda _o, n: self._pod_event(n), self._pod_event)

    def _pod_event(self, pod: Object) -> None:
        self.enqueue_owner(pod, "Job")

    def backoff(self, failures: int) -> float:
        settings = self.ctx.settings
        if failures <= 0:
            return 0.0
        return min(
            settings.job_backoff_base * float(1 << min(failures - 1, 20)), settings.job_backoff_max
        )

    async def reconcile(self, key: str) -> float | None:
        job = self.jobs.get_by_key(key)
        if job is None or podutil.is_terminating(job):
            return None
        spec = job.get("spec") or {}
        now = self.clock.now()
        stamp = timestamp(self.clock)
        pods = self.pods.by_index("owner", podutil.uid_of(job))
        old = job.get("status") or {}
        active = [p for p in pods if podutil.is_active(p)]
        succeeded = max(
            int(old.get("succeeded") or 0),
            sum(1 for p in pods if podutil.phase(p) == "Succeeded"),
        )
        failed = max(
            int(old.get("failed") or 0), sum(1 for p in pods if podutil.phase(p) == "Failed")
        )
        status: Object = {k: v for k, v in old.items() if k not in ("active", "ready")}
        status.setdefault("startTime", stamp)
        conditions = [dict(c) for c in old.get("conditions") or []]
        wait: float | None = None
        if finished(job):
            for pod in active:
                await podcontrol.delete_pod(self, job, pod)
            active = []
        else:
            completions = spec.get("completions")
            parallelism = int(spec.get("parallelism", 1) or 0)
            backoff_limit = int(spec.get("backoffLimit", 6))
            deadline = spec.get("activeDeadlineSeconds")
            started = podutil.parse_time(status["startTime"]) or now
            failure: tuple[str, str] | None = None
            if failed > backoff_limit:
                failure = ("BackoffLimitExceeded", "Job has reached the specified backoff limit")
            elif deadline is not None:
                left = (started + datetime.timedelta(seconds=int(deadline)) - now).total_seconds()
                if left <= 0:
                    failure = ("DeadlineExceeded", "Job was active longer than specified deadline")
                else:
                    wait = left
            done = (completions is not None and succeeded >= int(completions)) or (
                completions is None and succeeded > 0 and not active
            )
            if failure is not None:
                for pod in active:
                    await podcontrol.delete_pod(self, job, pod)
                active = []
                conditions.append(_job_condition("FailureTarget", *failure, stamp))
                conditions.append(_job_condition("Failed", *failure, stamp))
                self.event(job, "Warning", failure[0], failure[1])
                wait = None
            elif done:
                for pod in active:
                    await podcontrol.delete_pod(self, job, pod)
                active = []
                message = "Reached expected number of succeeded pods"
                conditions.append(
                    _job_condition("SuccessCriteriaMet", "CompletionsReached", message, stamp)
                )
                conditions.append(_job_condition("Complete", "CompletionsReached", message, stamp))
                status["completionTime"] = stamp
                self.event(job, "Normal", "Completed", "Job completed")
                wait = None
            elif spec.get("suspend"):
                for pod in active:
                    await podcontrol.delete_pod(self, job, pod)
                active = []
            else:
                if completions is None:
                    want = parallelism if succeeded == 0 else 0
                else:
                    want = min(parallelism, int(completions) - succeeded)
                missing = want - len(active)
                if missing > 0:
                    pause = self._backoff_left(pods, failed, now)
                    if pause > 0:
                        wait = pause if wait is None else min(wait, pause)
                    else:
                        for _ in range(missing):
                            active.append(await self._create(job))
                elif missing < 0:
                    doomed = sorted(active, key=podutil.deletion_rank)[:-missing]
                    for pod in doomed:
                        await podcontrol.delete_pod(self, job, pod)
                    active = [p for p in active if p not in doomed]
        status["conditions"] = conditions
        if not conditions:
            del status["conditions"]
        status["active"] = len(active)
        status["ready"] = sum(1 for p in active if podutil.is_ready(p))
        status["succeeded"] = succeeded
        status["failed"] = failed
        status["terminating"] = sum(1 for p in pods if podutil.is_terminating(p))
        for key_ in ("active", "succeeded", "failed"):
            if not status[key_]:
                del status[key_]
        status["uncountedTerminatedPods"] = {}
        if status != old:
            updated = await self.api.update(JOBS, {**job, "status": status}, subresource="status")
            self.jobs.assume(updated)
        return wait

    def _backoff_left(self, pods: list[Object], failed: int, now: datetime.datetime) -> float:
        if failed == 0:
            return 0.0
        last = last_failure(pods)
        if last is None:
            return 0.0
        return (last + datetime.timedelta(seconds=self.backoff(failed)) - now).total_seconds()

    async def _create(self, job: Object) -> Object:
        template = (job.get("spec") or {}).get("template") or {}
        pod = podutil.pod_from_template(template, job, generate_name=f"{podutil.name_of(job)}-")
        return await podcontrol.create_pod(self, job, pod)
