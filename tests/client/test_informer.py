"""Informer: cache, handlers, indexes; relists on 410 and after disconnects, on a virtual clock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from k3py.cluster.api.resources import ResourceInfo
from k3py.cluster.api.status import gone
from k3py.cluster.client.client import Unreachable
from k3py.cluster.client.clock import FakeClock
from k3py.cluster.client.fake import FakeApi, info_of
from k3py.cluster.client.informer import Informer

PODS = info_of("v1", "Pod")


def pod(name: str, node: str = "", ns: str = "default") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": ns}, "spec": {"nodeName": node}}


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def add(self, obj: dict[str, Any]) -> None:
        self.events.append(("add", obj["metadata"]["name"]))

    def update(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        self.events.append(("update", new["metadata"]["name"]))

    def delete(self, obj: dict[str, Any]) -> None:
        self.events.append(("delete", obj["metadata"]["name"]))


async def settle() -> None:
    for _ in range(30):
        await asyncio.sleep(0)


async def test_cache_handlers_and_index_follow_the_server() -> None:
    clock = FakeClock()
    api = FakeApi(clock)
    await api.create(PODS, pod("a", "n1"))
    informer = Informer(api, PODS, clock=clock)
    informer.add_index("node", lambda p: [p["spec"].get("nodeName") or ""])
    rec = Recorder()
    informer.add_handler(rec.add, rec.update, rec.delete)
    informer.start()
    await asyncio.wait_for(informer.synced.wait(), 1)
    assert informer.get("a", "default") is not None

    await api.create(PODS, pod("b", "n2"))
    await api.patch(PODS, "b", {"spec": {"nodeName": "n1"}}, "default")
    await api.delete(PODS, "a", "default", grace_period_seconds=0)
    await settle()
    assert rec.events == [("add", "a"), ("add", "b"), ("update", "b"), ("delete", "a")]
    assert [p["metadata"]["name"] for p in informer.by_index("node", "n1")] == ["b"]
    assert informer.by_index("node", "n2") == []
    assert informer.keys() == ["default/b"]
    await informer.stop()


async def test_expired_watch_relists_and_reports_what_was_missed() -> None:
    clock = FakeClock()
    api = FakeApi(clock)
    await api.create(PODS, pod("a"))
    await api.create(PODS, pod("b"))
    informer = Informer(api, PODS, clock=clock)
    rec = Recorder()
    informer.add_handler(rec.add, rec.update, rec.delete)
    informer.start()
    await informer.synced.wait()
    await settle()
    lists_before = sum(1 for verb, _, _ in api.requests if verb == "list")

    # The watch ends with 410 before it sees these changes; only a relist can tell.
    api.end_watches(gone("too old resource version"))
    await api.delete(PODS, "a", "default")
    await api.create(PODS, pod("c"))
    api.compact()
    await settle()

    assert sum(1 for verb, _, _ in api.requests if verb == "list") == lists_before + 1
    assert sorted(rec.events[2:]) == [("add", "c"), ("delete", "a")]
    assert sorted(informer.keys()) == ["default/b", "default/c"]
    assert clock.monotonic() == 0  # no back-off for an expired watch
    await informer.stop()


class Flaky:
    """A list-watcher whose server is down for the first ``failures`` lists."""

    def __init__(self, api: FakeApi, clock: FakeClock, failures: int) -> None:
        self.api = api
        self.clock = clock
        self.failures = failures
        self.times: list[float] = []

    async def list(self, info: ResourceInfo, *args: Any, **kwargs: Any) -> Any:
        self.times.append(self.clock.monotonic())
        if len(self.times) <= self.failures:
            raise Unreachable("connection refused")
        return await self.api.list(info, *args, **kwargs)

    def watch(self, info: ResourceInfo, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        return self.api.watch(info, *args, **kwargs)


async def test_unreachable_server_is_retried_with_growing_back_off() -> None:
    clock = FakeClock()
    api = FakeApi(clock)
    await api.create(PODS, pod("a"))
    flaky = Flaky(api, clock, failures=4)
    informer = Informer(flaky, PODS, clock=clock)
    informer.start()
    await settle()
    assert not informer.synced.is_set()
    for _ in range(200):
        await clock.advance(0.05)
    assert informer.synced.is_set()
    assert informer.keys() == ["default/a"]
    gaps = [b - a for a, b in zip(flaky.times, flaky.times[1:], strict=False)]
    # 0.5 s, 1 s, 2 s, 4 s, each ± 20 %: retried, and less often the longer it lasts.
    assert len(gaps) == 4
    for gap, base in zip(gaps, (0.5, 1, 2, 4), strict=True):
        assert base * 0.8 - 0.051 <= gap <= base * 1.2 + 0.051
    await informer.stop()


async def test_a_dropped_watch_relists_after_back_off() -> None:
    clock = FakeClock()
    api = FakeApi(clock)
    informer = Informer(api, PODS, clock=clock)
    informer.start()
    await informer.synced.wait()
    await settle()

    api.end_watches(Unreachable("connection reset"))
    await api.create(PODS, pod("late"))
    await settle()
    assert informer.keys() == []
    await clock.advance(1)
    assert informer.keys() == ["default/late"]
    await informer.stop()


async def test_handlers_added_late_hear_the_cached_objects_and_broken_handlers_are_contained() -> (
    None
):
    api = FakeApi()
    await api.create(PODS, pod("a"))
    informer = Informer(api, PODS)

    def broken(obj: dict[str, Any]) -> None:
        raise RuntimeError("handler bug")

    informer.add_handler(on_add=broken)
    informer.start()
    await informer.synced.wait()
    rec = Recorder()
    informer.add_handler(rec.add)
    assert rec.events == [("add", "a")]
    await api.create(PODS, pod("b"))
    await settle()
    assert rec.events == [("add", "a"), ("add", "b")]
    await informer.stop()
