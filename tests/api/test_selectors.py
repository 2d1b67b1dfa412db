"""Label and field selectors parse, print and match as the API server's do."""

from __future__ import annotations

from typing import Any

import pytest

from k3py.cluster.api.selectors import (
    FieldSelector,
    LabelSelector,
    format_label_selector,
    format_labels,
)
from k3py.cluster.api.status import ApiError
from tests.api.kinds import info as kind_info

PODS = kind_info("Pod")
NODES = kind_info("Node")
CONFIGMAPS = kind_info("ConfigMap")
EVENTS = kind_info("Event")


@pytest.mark.parametrize(
    ("text", "labels", "expected"),
    [
        ("app=web", {"app": "web"}, True),
        ("app==web", {"app": "web"}, True),
        ("app=web", {"app": "db"}, False),
        ("app!=web", {"app": "db"}, True),
        ("app!=web", {}, True),  # a missing label is "not equal"
        ("app in (web,db)", {"app": "db"}, True),
        ("app in (web,db)", {}, False),
        ("app notin (web,db)", {"app": "cache"}, True),
        ("app notin (web,db)", {}, True),
        ("app", {"app": ""}, True),
        ("!app", {"app": "x"}, False),
        ("!app", {"tier": "x"}, True),
        ("replicas>2", {"replicas": "3"}, True),
        ("replicas>2", {"replicas": "2"}, False),
        ("replicas<2", {"replicas": "-1"}, True),
        ("replicas>2", {"replicas": "three"}, False),
        ("app=web,tier in (front),!canary", {"app": "web", "tier": "front"}, True),
        ("app=web,tier in (front),!canary", {"app": "web", "tier": "front", "canary": ""}, False),
        ("x=", {"x": ""}, True),
        ("x in ()", {"x": ""}, True),
        ("x in (a,,b)", {"x": ""}, True),
        ("", {"anything": "goes"}, True),
        ("  app  =  web  ", {"app": "web"}, True),
        ("example.com/role=edge", {"example.com/role": "edge"}, True),
    ],
)
def test_label_selector_matching(text: str, labels: dict[str, str], expected: bool) -> None:
    assert LabelSelector.parse(text).matches(labels) is expected


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("tier=front,app=web", "app=web,tier=front"),
        ("app in (web, db)", "app in (db,web)"),
        ("!canary,app notin (x)", "app notin (x),!canary"),
        ("n>5", "n>5"),
        ("a==b", "a==b"),
    ],
)
def test_label_selector_prints_sorted(text: str, canonical: str) -> None:
    assert str(LabelSelector.parse(text)) == canonical


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("x==a==b", "found '==', expected: ',' or 'end of string'"),
        ("!x=a", "found '=', expected: ',' or 'end of string'"),
        (
            "x<a",
            'unable to parse requirement: values[0]: Invalid value: "a": '
            "for 'Gt', 'Lt' operators, the value must be an integer",
        ),
        ("x in (a", "unable to parse requirement: found '', expected: ',' or ')'"),
        ("x,", "found '', expected: identifier after ','"),
        ("=x", "found '=', expected: !, identifier, or 'end of string'"),
        ("x in a", "unable to parse requirement: found 'a' expected: '('"),
    ],
)
def test_label_selector_syntax_errors_are_400(text: str, message: str) -> None:
    with pytest.raises(ApiError) as info:
        LabelSelector.parse(text)
    assert info.value.code == 400
    assert info.value.reason == "BadRequest"
    assert info.value.message == message


def test_label_selector_rejects_bad_keys_and_values_in_kubernetes_words() -> None:
    with pytest.raises(ApiError) as info:
        LabelSelector.parse("a b=c")
    assert info.value.message == (
        "unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt"
    )
    with pytest.raises(ApiError) as info:
        LabelSelector.parse("x=a||y=b")
    assert info.value.message.startswith(
        'unable to parse requirement: values[0][x]: Invalid value: "a||y": a valid label'
    )
    with pytest.raises(ApiError) as info:
        LabelSelector.parse("Bad_/key=x")
    assert info.value.message.startswith(
        'unable to parse requirement: <nil>: Invalid value: "Bad_/key": prefix part a lowercase '
        "RFC 1123 subdomain must consist of"
    )
    with pytest.raises(ApiError) as info:
        LabelSelector.parse("app=-bad-")
    assert info.value.message.startswith(
        'unable to parse requirement: values[0][app]: Invalid value: "-bad-": '
        "a valid label must be an empty string or consist of"
    )


def test_from_object_match_labels_and_expressions() -> None:
    selector = LabelSelector.from_object(
        {
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["front", "edge"]},
                {"key": "canary", "operator": "DoesNotExist"},
                {"key": "zone", "operator": "Exists"},
                {"key": "arch", "operator": "NotIn", "values": ["s390x"]},
            ],
        }
    )
    assert str(selector) == "app=web,arch notin (s390x),!canary,tier in (edge,front),zone"
    assert selector.matches({"app": "web", "tier": "edge", "zone": "a"})
    assert not selector.matches({"app": "web", "tier": "edge"})
    assert not selector.matches({"app": "web", "tier": "edge", "zone": "a", "arch": "s390x"})


def test_from_object_nil_selects_nothing_and_empty_selects_everything() -> None:
    assert not LabelSelector.from_object(None).matches({"app": "web"})
    assert LabelSelector.from_object({}).matches({"app": "web"})
    assert LabelSelector.from_object({}).empty
    assert format_label_selector(None) == "<none>"
    assert format_label_selector({"matchLabels": {"app": "web"}}) == "app=web"


def test_from_object_rejects_unknown_operator() -> None:
    with pytest.raises(ApiError) as info:
        LabelSelector.from_object({"matchExpressions": [{"key": "a", "operator": "Equals"}]})
    assert info.value.message == '"Equals" is not a valid label selector operator'
    with pytest.raises(ApiError) as info:
        LabelSelector.from_object({"matchExpressions": [{"key": "a", "operator": "In"}]})
    assert "values set can't be empty" in info.value.message


def test_format_labels() -> None:
    assert format_labels({"b": "2", "a": "1"}) == "a=1,b=2"
    assert format_labels({}) == "<none>"


def _pod(name: str, node: str, phase: str, namespace: str = "default") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"nodeName": node, "restartPolicy": "Always"},
        "status": {"phase": phase},
    }


def test_field_selector_on_pods() -> None:
    running_on_n1 = FieldSelector.parse("spec.nodeName=n1,status.phase=Running", PODS)
    assert running_on_n1.matches(_pod("a", "n1", "Running"))
    assert not running_on_n1.matches(_pod("a", "n2", "Running"))
    unscheduled = FieldSelector.parse("spec.nodeName=", PODS)
    assert unscheduled.matches(_pod("a", "", "Pending"))
    assert not unscheduled.matches(_pod("a", "n1", "Pending"))
    not_done = FieldSelector.parse("status.phase!=Succeeded,status.phase!=Failed", PODS)
    assert not_done.matches(_pod("a", "n1", "Running"))
    assert not not_done.matches(_pod("a", "n1", "Failed"))
    by_name = FieldSelector.parse("metadata.name==a,metadata.namespace=default", PODS)
    assert by_name.matches(_pod("a", "", "Pending"))
    assert by_name.requires_exact("metadata.name") == "a"
    legacy = FieldSelector.parse("spec.host=n1", PODS)
    assert legacy.terms[0].field == "spec.nodeName"


def test_field_selector_escapes() -> None:
    selector = FieldSelector.parse(r"metadata.name=a\,b\=c", CONFIGMAPS)
    assert selector.matches({"metadata": {"name": "a,b=c", "namespace": "x"}})
    assert str(selector) == r"metadata.name=a\,b\=c"


@pytest.mark.parametrize(
    ("text", "info_kind", "message"),
    [
        ("spec.foo=bar", "Pod", "field label not supported: spec.foo"),
        ("metadata.namespace=x", "Node", "field label not supported: metadata.namespace"),
        (
            "data.key=x",
            "ConfigMap",
            '"data.key" is not a known field selector: only "metadata.name", "metadata.namespace"',
        ),
        (
            "status.phase",
            "Pod",
            "invalid selector: 'status.phase'; can't understand 'status.phase'",
        ),
        (r"metadata.name=a\b", "Pod", r"invalid field selector: invalid escape sequence: \b"),
    ],
)
def test_field_selector_errors_are_400(text: str, info_kind: str, message: str) -> None:
    info = {"Pod": PODS, "Node": NODES, "ConfigMap": CONFIGMAPS}[info_kind]
    with pytest.raises(ApiError) as err:
        FieldSelector.parse(text, info)
    assert err.value.code == 400
    assert err.value.message == message


def test_field_selector_on_nodes_and_events() -> None:
    node = {"metadata": {"name": "n1"}, "spec": {"unschedulable": True}}
    assert FieldSelector.parse("spec.unschedulable=true", NODES).matches(node)
    assert FieldSelector.parse("metadata.name=n1", NODES).matches(node)
    event = {
        "metadata": {"name": "e", "namespace": "default"},
        "involvedObject": {"kind": "Pod", "name": "web-1", "namespace": "default"},
        "reason": "Scheduled",
        "source": {"component": "default-scheduler"},
        "type": "Normal",
    }
    selector = FieldSelector.parse(
        "involvedObject.kind=Pod,involvedObject.name=web-1,source=default-scheduler", EVENTS
    )
    assert selector.matches(event)
    assert not FieldSelector.parse("type=Warning", EVENTS).matches(event)
