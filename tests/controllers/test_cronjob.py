"""The CronJob controller on a virtual clock: schedules, time zones, concurrency policies,
history limits, deadlines, suspend, and no second run of a time after a restart."""

from __future__ import annotations

from typing import Any

from k3py.cluster.api import cron
from k3py.cluster.server.controllers.base import JOBS
from k3py.cluster.server.controllers.cronjob import CRONJOBS, CronJobController, job_for
from tests.controllers.harness import Cluster, template

Object = dict[str, Any]


def cron_job(name: str, schedule: str = "* * * * *", **spec: Any) -> Object:
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "schedule": schedule,
            "jobTemplate": {
                "metadata": {"labels": {"cron": name}},
                "spec": {"template": template("task:1", {"cron": name}, restartPolicy="Never")},
            },
            **spec,
        },
    }


def jobs(cluster: Cluster) -> list[Object]:
    return sorted(cluster.api.objects(JOBS), key=lambda j: j["metadata"]["name"])


def stored(cluster: Cluster, name: str) -> Object:
    assert CRONJOBS is not None
    return next(c for c in cluster.api.objects(CRONJOBS) if c["metadata"]["name"] == name)


async def finish(cluster: Cluster, job: Object, kind: str = "Complete") -> None:
    status = {
        "conditions": [{"type": kind, "status": "True"}],
        "startTime": job["metadata"]["creationTimestamp"],
        "completionTime": job["metadata"]["creationTimestamp"],
    }
    current = next(j for j in jobs(cluster) if j["metadata"]["name"] == job["metadata"]["name"])
    await cluster.api.update(JOBS, {**current, "status": status}, subresource="status")
    await cluster.settle()


async def test_runs_once_a_minute_and_keeps_its_history(cluster: Cluster) -> None:
    cluster.add(CronJobController)
    await cluster.start()
    await cluster.create(cron_job("tick", successfulJobsHistoryLimit=2))
    await cluster.settle()
    assert jobs(cluster) == []  # the first time is the next whole minute
    for run in range(1, 4):
        await cluster.clock.advance(60)
        await cluster.settle()
        names = [j["metadata"]["name"] for j in jobs(cluster)]
        assert len(names) == min(run, 3)
        newest = jobs(cluster)[-1]
        assert newest["metadata"]["ownerReferences"][0]["kind"] == "CronJob"
        assert newest["metadata"]["labels"] == {"cron": "tick"}
        assert stored(cluster, "tick")["status"]["active"][-1]["name"] == names[-1]
        await finish(cluster, newest)
    # Three ran; the oldest successful one is pruned beyond the limit of two.
    assert len(jobs(cluster)) == 2
    status = stored(cluster, "tick")["status"]
    assert "active" not in status
    assert status["lastScheduleTime"].endswith(":03:00Z")
    assert len(cluster.events("SuccessfulCreate")) == 3


async def test_schedule_in_a_time_zone(cluster: Cluster) -> None:
    cluster.add(CronJobController)
    await cluster.start()
    # 09:00 in Tokyo is 00:00 UTC; the virtual clock starts at 2026-01-01T00:00Z.
    await cluster.create(cron_job("tokyo", "0 9 * * *", timeZone="Asia/Tokyo"))
    await cluster.clock.advance(23 * 3600 + 59 * 60)
    await cluster.settle()
    assert jobs(cluster) == []
    await cluster.clock.advance(60)
    await cluster.settle()
    [job] = jobs(cluster)
    scheduled = job["metadata"]["annotations"]["batch.kubernetes.io/cronjob-scheduled-timestamp"]
    assert scheduled == "2026-01-02T09:00:00+09:00"


async def test_forbid_skips_and_replace_replaces_a_running_job(cluster: Cluster) -> None:
    cluster.add(CronJobController)
    await cluster.start()
    await cluster.create(cron_job("single", concurrencyPolicy="Forbid"))
    await cluster.create(cron_job("fresh", concurrencyPolicy="Replace"))
    await cluster.clock.advance(60)
    await cluster.settle()
    await cluster.clock.advance(60)
    await cluster.settle()
    single = [j for j in jobs(cluster) if j["metadata"]["name"].startswith("single-")]
    fresh = [j for j in jobs(cluster) if j["metadata"]["name"].startswith("fresh-")]
    assert len(single) == 1  # the second minute was skipped while the first still ran
    assert len(fresh) == 1  # the first was deleted for the second
    assert fresh[0]["metadata"]["name"] != single[0]["metadata"]["name"].replace("single", "fresh")
    assert cluster.events("SuccessfulDelete")


async def test_suspend_and_a_missed_starting_deadline_start_nothing(cluster: Cluster) -> None:
    cluster.add(CronJobController)
    await cluster.create(cron_job("paused", suspend=True))
    await cluster.create(cron_job("late", "0 * * * *", startingDeadlineSeconds=10))
    # The controller starts 30 s after the 01:00 run was due: too late for a 10 s deadline.
    await cluster.clock.advance(3600 + 30)
    await cluster.start()
    await cluster.settle()
    assert jobs(cluster) == []
    await cluster.clock.advance(3600 - 30)
    await cluster.settle()
    assert [j["metadata"]["name"].split("-")[0] for j in jobs(cluster)] == ["late"]


async def test_a_restart_does_not_run_a_time_twice(cluster: Cluster) -> None:
    await cluster.create(cron_job("once"))
    await cluster.clock.advance(60)
    # An earlier controller created the Job for 00:01 and stopped before recording it.
    cj = stored(cluster, "once")
    due = cluster.clock.now().replace(second=0, microsecond=0)
    await cluster.create(job_for(cj, due, cron.time_zone(None)))
    cluster.add(CronJobController)
    await cluster.start()
    await cluster.settle()
    assert len(jobs(cluster)) == 1
    assert stored(cluster, "once")["status"]["lastScheduleTime"].endswith(":01:00Z")
