"""CronJob (batch/v1) rules of the API: validation and the ``kubectl get cronjob`` table.

Validation follows the API server's: a schedule it can parse (``TZ=``/``CRON_TZ=`` in it
refused in favour of ``spec.timeZone``), a time zone it knows, a concurrency policy of
``Allow``, ``Forbid`` or ``Replace``, non-negative deadlines and history limits, a name short
enough for its Jobs' names (52 characters), and a job template that is a valid Job's.
Defaults are in :mod:`.defaults`; the schedule's arithmetic is :mod:`.cron`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from k3py.cluster.api import cron
from k3py.cluster.api.printing import (
    NAME,
    Cells,
    Column,
    Obj,
    age,
    as_dict,
    as_list,
    name_of,
    object_age,
    pod_containers,
    pod_template_columns,
)
from k3py.cluster.api.selectors import format_label_selector
from k3py.cluster.api.validation_base import Errors
from k3py.cluster.api.validation_workloads import validate_pod_template

MAX_NAME_LENGTH = 52  # the Job's name adds "-" and up to 11 digits of minutes
CONCURRENCY_POLICIES = ["Allow", "Forbid", "Replace"]


def validate_cron_job(errs: Errors, obj: Obj, old: Obj | None) -> None:
    name = str((obj.get("metadata") or {}).get("name") or "")
    if len(name) > MAX_NAME_LENGTH:
        errs.invalid("metadata.name", name, f"must be no more than {MAX_NAME_LENGTH} characters")
    spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
    assert isinstance(spec, dict)
    schedule = spec.get("schedule")
    if not schedule:
        errs.required("spec.schedule")
    elif not isinstance(schedule, str):
        errs.invalid("spec.schedule", schedule, "must be a string")
    elif "TZ=" in schedule:
        errs.invalid(
            "spec.schedule",
            schedule,
            "cannot use TZ or CRON_TZ in schedule, use timeZone field instead",
        )
    else:
        try:
            cron.parse(schedule)
        except cron.CronError as err:
            errs.invalid("spec.schedule", schedule, str(err))
    zone = spec.get("timeZone")
    if zone is not None:
        try:
            cron.time_zone(str(zone))
        except cron.CronError as err:
            errs.invalid("spec.timeZone", zone, str(err))
    policy = spec.get("concurrencyPolicy")
    if policy not in CONCURRENCY_POLICIES:
        errs.not_supported("spec.concurrencyPolicy", policy or "", CONCURRENCY_POLICIES)
    for field in (
        "startingDeadlineSeconds",
        "successfulJobsHistoryLimit",
        "failedJobsHistoryLimit",
    ):
        errs.nonnegative(f"spec.{field}", spec.get(field))
    job_spec = as_dict(as_dict(spec.get("jobTemplate")).get("spec"))
    path = "spec.jobTemplate.spec.template"
    validate_pod_template(errs, path, job_spec.get("template"))
    restart = as_dict(as_dict(job_spec.get("template")).get("spec")).get("restartPolicy")
    if restart not in ("OnFailure", "Never"):
        if restart:
            errs.not_supported(f"{path}.spec.restartPolicy", restart, ["OnFailure", "Never"])
        else:
            errs.required(f"{path}.spec.restartPolicy", 'valid values: "OnFailure", "Never"')
    for field in ("parallelism", "completions", "activeDeadlineSeconds", "backoffLimit"):
        errs.nonnegative(f"spec.jobTemplate.spec.{field}", job_spec.get(field))


# --- kubectl get cronjobs ---------------------------------------------------------------------

CRON_JOB_COLUMNS = [
    NAME,
    Column("Schedule", description="The schedule in Cron format."),
    Column("Timezone", description="The time zone name for the given schedule."),
    Column("Suspend", description="Whether to suspend subsequent executions.", type="boolean"),
    Column("Active", description="The pointers to currently running jobs.", type="integer"),
    Column("Last Schedule", description="Last time the job was successfully scheduled."),
    *pod_template_columns("A label query over pods that should match the pod count."),
]


def print_cron_job(obj: Obj, now: datetime) -> Cells:
    spec, status = as_dict(obj.get("spec")), as_dict(obj.get("status"))
    job_spec = as_dict(as_dict(spec.get("jobTemplate")).get("spec"))
    pod_spec = as_dict(as_dict(job_spec.get("template")).get("spec"))
    names, images = pod_containers(pod_spec)
    last = status.get("lastScheduleTime")
    selector = job_spec.get("selector")
    cells: list[Any] = [
        name_of(obj),
        str(spec.get("schedule") or ""),
        str(spec.get("timeZone") or "<none>"),
        bool(spec.get("suspend")),
        len(as_list(status.get("active"))),
        age(last, now) if last else "<none>",
        object_age(obj, now),
        names,
        images,
        format_label_selector(selector) if isinstance(selector, dict) else "<none>",
    ]
    return cells, []
