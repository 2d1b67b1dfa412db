"""The CronJob controller: a Job per scheduled time, with the CronJob's policies.

For each CronJob it finds the most recent scheduled time since the last one it started (or
since its creation), in the CronJob's time zone (:mod:`k3py.cluster.api.cron`). A time older
than ``startingDeadlineSeconds`` is missed (an Event says so); more than 100 missed times are
reported and only the most recent runs. ``concurrencyPolicy`` decides what happens while a
Job still runs: ``Allow`` starts another, ``Forbid`` skips the time, ``Replace`` deletes the
running ones first. ``suspend`` starts nothing. Finished Jobs beyond
``successfulJobsHistoryLimit``/``failedJobsHistoryLimit`` are deleted, oldest first.

A Job's name is the CronJob's name and the scheduled time in minutes since the epoch, as
kube-controller-manager names it, so a time is started once: after a restart (or a second
server) that did not see its own ``lastScheduleTime`` written, creating the same Job again is an
``AlreadyExists`` that counts as done.
"""

from __future__ import annotations

import copy
import datetime
import logging
from typing import Any

from k3py.cluster.api import cron
from k3py.cluster.api.resources import by_kind
from k3py.cluster.api.status import ApiError
from k3py.cluster.server.controllers import podutil
from k3py.cluster.server.controllers.base import JOBS, ControllerContext, QueueController
from k3py.cluster.server.controllers.job import finished

logger = logging.getLogger("k3py.controllers.cronjob")

Object = dict[str, Any]
CRONJOBS = by_kind("batch/v1", "CronJob")
SCHEDULED_ANNOTATION = "batch.kubernetes.io/cronjob-scheduled-timestamp"
# Re-check at least this often: a clock that jumps, or a missed watch event.
MAX_WAIT = 60.0


def _stamp(when: datetime.datetime) -> str:
    return when.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _succeeded(job: Object) -> bool:
    return any(
        c.get("type") == "Complete" and c.get("status") == "True"
        for c in (job.get("status") or {}).get("conditions") or []
    )


def _started(job: Object) -> str:
    status = job.get("status") or {}
    return str(status.get("startTime") or podutil.meta(job).get("creationTimestamp") or "")


def _reference(job: Object) -> Object:
    meta = podutil.meta(job)
    return {
        "kind": "Job",
        "namespace": meta.get("namespace", ""),
        "name": meta.get("name", ""),
        "uid": meta.get("uid", ""),
        "apiVersion": "batch/v1",
        "resourceVersion": meta.get("resourceVersion", ""),
    }


def job_for(cron_job: Object, scheduled: datetime.datetime, zone: datetime.tzinfo) -> Object:
    """The Job that runs ``cron_job`` for the time ``scheduled``."""
    meta = podutil.meta(cron_job)
    template = (cron_job.get("spec") or {}).get("jobTemplate") or {}
    template_meta = template.get("metadata") or {}
    annotations = dict(template_meta.get("annotations") or {})
    annotations[SCHEDULED_ANNOTATION] = scheduled.astimezone(zone).isoformat()
    job_meta: Object = {
        "name": f"{meta['name']}-{int(scheduled.timestamp()) // 60}",
        "namespace": meta.get("namespace"),
        "annotations": annotations,
        "ownerReferences": [
            {
                "apiVersion": "batch/v1",
                "kind": "CronJob",
                "name": meta["name"],
                "uid": meta.get("uid", ""),
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
    }
    if template_meta.get("labels"):
        job_meta["labels"] = dict(template_meta["labels"])
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": job_meta,
        "spec": copy.deepcopy(template.get("spec") or {}),
    }


class CronJobController(QueueController):
    name = "cronjob"
    component = "cronjob-controller"

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        assert CRONJOBS is not None
        self.cron_jobs = ctx.informers.get(CRONJOBS)
        self.jobs = ctx.informers.get(JOBS)
        self.cron_jobs.add_handler(self.enqueue, lambda _o, n: self.enqueue(n), self.enqueue)
        self.jobs.add_handler(self._job_event, lambda _o, n: self._job_event(n), self._job_event)

    def _job_event(self, job: Object) -> None:
        self.enqueue_owner(job, "CronJob")

    async def reconcile(self, key: str) -> float | None:
        assert CRONJOBS is not None
        cron_job = self.cron_jobs.get_by_key(key)
        if cron_job is None or podutil.is_terminating(cron_job):
            return None
        spec = cron_job.get("spec") or {}
        now = self.clock.now()
        jobs = list(self.jobs.by_index("owner", podutil.uid_of(cron_job)))
        running = [j for j in jobs if not finished(j) and not podutil.is_terminating(j)]
        old = cron_job.get("status") or {}
        status: Object = {k: v for k, v in old.items() if k != "active"}
        completed = [
            t
            for j in jobs
            if _succeeded(j) and (t := (j.get("status") or {}).get("completionTime"))
        ]
        if completed:
            status["lastSuccessfulTime"] = max(completed)
        await self._prune(cron_job, jobs)
        wait: float | None = MAX_WAIT
        try:
            schedule = cron.parse(str(spec.get("schedule", "")))
            zone = cron.time_zone(spec.get("timeZone"))
        except cron.CronError as err:
            self.event(cron_job, "Warning", "UnparseableSchedule", str(err))
            schedule, zone, wait = None, datetime.UTC, None
        if schedule is not None and not spec.get("suspend"):
            running = await self._schedule(cron_job, schedule, zone, now, running, status)
            upcoming = schedule.next_after(now, zone)
            wait = min(MAX_WAIT, max(0.0, (upcoming - self.clock.now()).total_seconds()) + 0.05)
        if running:
            status["active"] = sorted((_reference(j) for j in running), key=lambda r: r["name"])
        if status != old:
            updated = await self.api.update(
                CRONJOBS, {**cron_job, "status": status}, subresource="status"
            )
            self.cron_jobs.assume(updated)
        return wait

    async def _schedule(
        self,
        cron_job: Object,
        schedule: cron.Schedule,
        zone: datetime.tzinfo,
        now: datetime.datetime,
        running: list[Object],
        status: Object,
    ) -> list[Object]:
        """Start the Job of the most recent due time, if the policies allow; returns the
        Jobs running afterwards and records the time in ``status``."""
        spec = cron_job.get("spec") or {}
        earliest = podutil.parse_time(status.get("lastScheduleTime")) or podutil.parse_time(
            podutil.meta(cron_job).get("creationTimestamp")
        )
        if earliest is None:
            earliest = now
        deadline = spec.get("startingDeadlineSeconds")
        if deadline is not None:
            earliest = max(earliest, now - datetime.timedelta(seconds=int(deadline)))
        scheduled, missed = schedule.most_recent(earliest, now, zone)
        if scheduled is None:
            return running
        if missed > cron.TOO_MANY_MISSED:
            self.event(
                cron_job,
                "Warning",
                "TooManyMissedTimes",
                "too many missed start times. Set or decrease .spec.startingDeadlineSeconds"
                " or check clock skew",
            )
        if deadline is not None and scheduled + datetime.timedelta(seconds=int(deadline)) < now:
            self.event(
                cron_job,
                "Warning",
                "MissSchedule",
                f"Missed scheduled time to start a job: {scheduled.isoformat()}",
            )
            return running
        policy = spec.get("concurrencyPolicy") or "Allow"
        if policy == "Forbid" and running:
            return running  # the time is skipped while a Job runs; checked again next time
        if policy == "Replace":
            for job in running:
                await self._delete(cron_job, job)
            running = []
        job = job_for(cron_job, scheduled, zone)
        try:
            created = await self.api.create(JOBS, job, podutil.meta(cron_job).get("namespace"))
        except ApiError as err:
            if err.code != 409:
                raise
            # Created before (by an earlier run of this controller): not started twice.
            created = job
        else:
            self.event(
                cron_job, "Normal", "SuccessfulCreate", f"Created job {job['metadata']['name']}"
            )
        if not any(podutil.name_of(j) == podutil.name_of(created) for j in running):
            running = [*running, created]
        status["lastScheduleTime"] = _stamp(scheduled)
        return running

    async def _delete(self, cron_job: Object, job: Object) -> None:
        try:
            await self.api.delete(
                JOBS,
                podutil.name_of(job),
                podutil.meta(job).get("namespace"),
                propagation_policy="Background",
            )
        except ApiError as err:
            if err.code != 404:
                raise
            return
        self.event(cron_job, "Normal", "SuccessfulDelete", f"Deleted job {podutil.name_of(job)}")

    async def _prune(self, cron_job: Object, jobs: list[Object]) -> None:
        """Delete the oldest finished Jobs beyond the history limits."""
        spec = cron_job.get("spec") or {}
        done = [j for j in jobs if finished(j) and not podutil.is_terminating(j)]
        for succeeded, field, default in (
            (True, "successfulJobsHistoryLimit", 3),
            (False, "failedJobsHistoryLimit", 1),
        ):
            limit = spec.get(field)
            keep = int(default if limit is None else limit)
            kind = sorted(
                (j for j in done if _succeeded(j) == succeeded),
                key=lambda j: str(
                    (j.get("status") or {}).get("startTime")
                    or podutil.meta(j).get("creationTimestamp")
                    or ""
                ),
            )
            for job in kind[: max(0, len(kind) - keep)]:
                await self._delete(cron_job, job)
