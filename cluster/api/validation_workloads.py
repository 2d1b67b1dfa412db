"""Validation of the workload kinds: Deployment, ReplicaSet, DaemonSet and Job.

Each needs a selector that matches its pod template's labels and a valid template (checked as
a PodSpec by :mod:`validation_pods`), with the restart policy its controller supports. Update
rules follow apps/v1 and batch/v1: selectors never change, a Job's template and completions
are fixed once created. Messages are the API server's (``empty selector is invalid for
deployment``, ```selector` does not match template `labels```, ``field is immutable``…).
"""

from __future__ import annotations

import re
from typing import Any

from k3py.cluster.api import names
from k3py.cluster.api.selectors import LabelSelector
from k3py.cluster.api.status import ApiError
from k3py.cluster.api.validation_base import (
    Errors,
    GoText,
    KindValidator,
    Obj,
    go_label_selector,
    selector_is_empty,
    validate_annotations,
    validate_label_selector,
    validate_labels,
)
from k3py.cluster.api.validation_pods import validate_pod_spec

_PERCENT = re.compile(r"^[0-9]+%$")
JOB_CONTROLLER_UID = "batch.kubernetes.io/controller-uid"


def validate_pod_template(errs: Errors, path: str, template: Any) -> None:
    if not isinstance(template, dict):
        errs.required(path)
        return
    meta = template.get("metadata") or {}
    validate_labels(errs, f"{path}.labels", meta.get("labels"))
    validate_annotations(errs, f"{path}.annotations", meta.get("annotations"))
    spec = template.get("spec")
    validate_pod_spec(errs, f"{path}.spec", spec)
    if isinstance(spec, dict) and spec.get("ephemeralContainers"):
        errs.forbidden(
            f"{path}.spec.ephemeralContainers", "ephemeral containers not allowed in pod template"
        )


def _template_labels(spec: Obj) -> dict[str, str]:
    template = spec.get("template") or {}
    labels = (template.get("metadata") or {}).get("labels") or {}
    return {str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {}


def _selector_matches_template(errs: Errors, spec: Obj, *, required: bool) -> None:
    """The selector must match the template's labels; a nil selector matches nothing."""
    selector = spec.get("selector")
    try:
        parsed = LabelSelector.from_object(selector if isinstance(selector, dict) else None)
    except ApiError:
        errs.invalid("spec.selector", go_label_selector(selector), "invalid label selector")
        return
    if selector is None and not required:
        return
    labels = _template_labels(spec)
    if not parsed.empty and not parsed.matches(labels):
        errs.invalid(
            "spec.template.metadata.labels", labels, "`selector` does not match template `labels`"
        )


def _validate_selector(errs: Errors, spec: Obj, kind_word: str) -> None:
    selector = spec.get("selector")
    if selector is None:
        errs.required("spec.selector")
        return
    validate_label_selector(errs, "spec.selector", selector)
    if selector_is_empty(selector):
        errs.invalid(
            "spec.selector",
            go_label_selector(selector),
            f"empty selector is invalid for {kind_word}",
        )


def _validate_replicated_template(errs: Errors, spec: Obj, owner: str) -> None:
    validate_pod_template(errs, "spec.template", spec.get("template"))
    pod_spec = (spec.get("template") or {}).get("spec") or {}
    if not isinstance(pod_spec, dict):
        return
    restart = pod_spec.get("restartPolicy")
    if restart and restart != "Always":
        errs.not_supported("spec.template.spec.restartPolicy", restart, ["Always"])
    if pod_spec.get("activeDeadlineSeconds") is not None:
        message = f"activeDeadlineSeconds in {owner} is not Supported"
        if owner == "DaemonSet":
            errs.invalid(
                "spec.template.spec.activeDeadlineSeconds",
                pod_spec["activeDeadlineSeconds"],
                message,
            )
        else:
            errs.forbidden("spec.template.spec.activeDeadlineSeconds", message)


def _int_or_percent(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _PERCENT.match(value):
        return int(value[:-1])
    return None


def _go_int_or_string(value: Any) -> GoText:
    if isinstance(value, int) and not isinstance(value, bool):
        return GoText(f'intstr.IntOrString{{Type:0, IntVal:{value}, StrVal:""}}')
    return GoText(f"intstr.IntOrString{{Type:1, IntVal:0, StrVal:{names.go_quote(str(value))}}}")


def _validate_int_or_percent(errs: Errors, path: str, value: Any) -> None:
    if value is None:
        return
    if isinstance(value, str):
        if not _PERCENT.match(value):
            errs.invalid(
                path,
                _go_int_or_string(value),
                names.regex_error(
                    "a valid percent string must be a numeric string followed by an ending '%'",
                    "[0-9]+%",
                    "1%",
                    "93%",
                ),
            )
        elif int(value[:-1]) > 100:
            errs.invalid(path, _go_int_or_string(value), "must not be greater than 100%")
    elif isinstance(value, int) and not isinstance(value, bool):
        errs.nonnegative(path, value)
    else:
        errs.invalid(path, value, "must be an integer or percentage (e.g '5%')")


# --- apps/v1 --------------------------------------------------------------------------------------


def _validate_deployment(errs: Errors, obj: Obj, old: Obj | None) -> None:
    spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
    assert isinstance(spec, dict)
    errs.nonnegative("spec.replicas", spec.get("replicas"))
    _validate_selector(errs, spec, "deployment")
    _selector_matches_template(errs, spec, required=True)
    _validate_replicated_template(errs, spec, "ReplicaSet")
    strategy = spec.get("strategy") or {}
    kind = strategy.get("type")
    if kind == "Recreate":
        if strategy.get("rollingUpdate") is not None:
            errs.forbidden(
                "spec.strategy.rollingUpdate",
                "may not be specified when strategy `type` is 'Recreate'",
            )
    elif kind == "RollingUpdate":
        rolling = strategy.get("rollingUpdate")
        if not isinstance(rolling, dict):
            errs.required(
                "spec.strategy.rollingUpdate", "this should be defaulted and never be nil"
            )
        else:
            path = "spec.strategy.rollingUpdate"
            _validate_int_or_percent(errs, f"{path}.maxUnavailable", rolling.get("maxUnavailable"))
            _validate_int_or_percent(errs, f"{path}.maxSurge", rolling.get("maxSurge"))
            if (
                _int_or_percent(rolling.get("maxUnavailable")) == 0
                and _int_or_percent(rolling.get("maxSurge")) == 0
            ):
                errs.invalid(
                    f"{path}.maxUnavailable",
                    _go_int_or_string(rolling.get("maxUnavailable")),
                    "may not be 0 when `maxSurge` is 0",
                )
    else:
        errs.not_supported("spec.strategy.type", kind or "", ["Recreate", "RollingUpdate"])
    min_ready = spec.get("minReadySeconds") or 0
    errs.nonnegative("spec.minReadySeconds", min_ready)
    errs.nonnegative("spec.revisionHistoryLimit", spec.get("revisionHistoryLimit"))
    deadline = spec.get("progressDeadlineSeconds")
    if isinstance(deadline, int):
        errs.nonnegative("spec.progressDeadlineSeconds", deadline)
        if isinstance(min_ready, int) and deadline <= min_ready:
            errs.invalid(
                "spec.progressDeadlineSeconds", deadline, "must be greater than minReadySeconds"
            )
    if old is not None:
        _immutable_selector(errs, spec, old)


def _validate_replica_set(errs: Errors, obj: Obj, old: Obj | None) -> None:
    spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
    assert isinstance(spec, dict)
    errs.nonnegative("spec.replicas", spec.get("replicas"))
    errs.nonnegative("spec.minReadySeconds", spec.get("minReadySeconds"))
    _validate_selector(errs, spec, "deployment")
    _selector_matches_template(errs, spec, required=True)
    _validate_replicated_template(errs, spec, "ReplicaSet")
    if old is not None:
        _immutable_selector(errs, spec, old)


def _validate_daemon_set(errs: Errors, obj: Obj, old: Obj | None) -> None:
    spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
    assert isinstance(spec, dict)
    _validate_selector(errs, spec, "daemonset")
    _selector_matches_template(errs, spec, required=True)
    _validate_replicated_template(errs, spec, "DaemonSet")
    errs.nonnegative("spec.minReadySeconds", spec.get("minReadySeconds"))
    errs.nonnegative("spec.revisionHistoryLimit", spec.get("revisionHistoryLimit"))
    strategy = spec.get("updateStrategy") or {}
    kind = strategy.get("type")
    path = "spec.updateStrategy"
    if kind == "RollingUpdate":
        rolling = strategy.get("rollingUpdate")
        if not isinstance(rolling, dict):
            errs.required(f"{path}.rollingUpdate")
        else:
            unavailable, surge = rolling.get("maxUnavailable"), rolling.get("maxSurge")
            _validate_int_or_percent(errs, f"{path}.rollingUpdate.maxUnavailable", unavailable)
            _validate_int_or_percent(errs, f"{path}.rollingUpdate.maxSurge", surge)
            has_unavailable = _int_or_percent(unavailable) not in (0, None)
            has_surge = _int_or_percent(surge) not in (0, None)
            if has_unavailable and has_surge:
                errs.invalid(
                    f"{path}.rollingUpdate.maxSurge",
                    _go_int_or_string(surge),
                    "may not be set when maxUnavailable is non-zero",
                )
            elif not has_unavailable and not has_surge:
                errs.required(
                    f"{path}.rollingUpdate.maxUnavailable", "cannot be 0 when maxSurge is 0"
                )
    elif kind != "OnDelete":
        errs.not_supported(f"{path}.type", kind or "", ["RollingUpdate", "OnDelete"])
    if old is not None:
        _immutable_selector(errs, spec, old)


def _immutable_selector(errs: Errors, spec: Obj, old: Obj) -> None:
    selector = spec.get("selector")
    if selector != (old.get("spec") or {}).get("selector"):
        errs.invalid("spec.selector", go_label_selector(selector), "field is immutable")


# --- batch/v1 -------------------------------------------------------------------------------------


def _validate_job(errs: Errors, obj: Obj, old: Obj | None) -> None:
    spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
    assert isinstance(spec, dict)
    for field in ("parallelism", "completions", "activeDeadlineSeconds", "backoffLimit"):
        errs.nonnegative(f"spec.{field}", spec.get(field))
    errs.nonnegative("spec.ttlSecondsAfterFinished", spec.get("ttlSecondsAfterFinished"))
    mode = spec.get("completionMode")
    if mode is not None and mode not in ("NonIndexed", "Indexed"):
        errs.not_supported("spec.completionMode", mode, ["NonIndexed", "Indexed"])
    if mode == "Indexed" and spec.get("completions") is None:
        errs.required("spec.completions", "when completion mode is Indexed")
    manual = spec.get("manualSelector") is True
    selector = spec.get("selector")
    if selector is None:
        # Without a manual selector the API server generates one from the Job's uid.
        if manual:
            errs.required("spec.selector")
    else:
        validate_label_selector(errs, "spec.selector", selector)
        _selector_matches_template(errs, spec, required=True)
        uid = (obj.get("metadata") or {}).get("uid")
        expected = {"matchLabels": {JOB_CONTROLLER_UID: uid}}
        if not manual and uid and selector != expected:
            errs.invalid(
                "spec.selector", go_label_selector(selector), "`selector` not auto-generated"
            )
    validate_pod_template(errs, "spec.template", spec.get("template"))
    pod_spec = (spec.get("template") or {}).get("spec") or {}
    restart = pod_spec.get("restartPolicy") if isinstance(pod_spec, dict) else None
    if restart not in ("OnFailure", "Never"):
        if restart:
            errs.not_supported("spec.template.spec.restartPolicy", restart, ["OnFailure", "Never"])
        else:
            errs.required("spec.template.spec.restartPolicy", 'valid values: "OnFailure", "Never"')
    if old is None:
        return
    old_spec = old.get("spec") or {}
    if selector != old_spec.get("selector"):
        errs.invalid("spec.selector", go_label_selector(selector), "field is immutable")
    if spec.get("template") != old_spec.get("template"):
        errs.invalid("spec.template", spec.get("template"), "field is immutable")
    for field in ("completions", "completionMode"):
        errs.immutable(f"spec.{field}", spec.get(field), old_spec.get(field))


KIND_VALIDATORS: dict[str, KindValidator] = {
    "Deployment": _validate_deployment,
    "ReplicaSet": _validate_replica_set,
    "DaemonSet": _validate_daemon_set,
    "Job": _validate_job,
}
