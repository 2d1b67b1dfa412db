"""The event recorder's spam filter: 25 Events per source and object, then one per 5 minutes."""

from __future__ import annotations

import asyncio
from typing import Any

from k3py.cluster.client import EventRecorder, FakeClock
from k3py.cluster.client.events import EVENTS
from k3py.cluster.client.fake import FakeApi


def _pod(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}"},
    }


async def _recorded(api: FakeApi) -> list[dict[str, Any]]:
    assert EVENTS is not None
    items, _ = await api.list(EVENTS, "default")
    return items


def test_a_burst_of_events_about_one_object_is_cut_at_25_and_refills_slowly() -> None:
    async def scenario() -> None:
        clock = FakeClock()
        api = FakeApi(clock)
        recorder = EventRecorder(api, clock, "replicaset-controller")
        owner, other = _pod("owner"), _pod("other")
        for i in range(30):
            recorder.event(owner, "Normal", "SuccessfulCreate", f"Created pod: p{i}")
        recorder.event(other, "Normal", "SuccessfulCreate", "Created pod: q")
        await recorder.flush()
        events = await _recorded(api)
        about = [e["involvedObject"]["name"] for e in events]
        assert about.count("owner") == 25
        assert about.count("other") == 1
        assert recorder.dropped == 5
        await clock.advance(300)  # one more token for the owner
        recorder.event(owner, "Normal", "SuccessfulCreate", "Created pod: late")
        recorder.event(owner, "Normal", "SuccessfulCreate", "Created pod: later")
        await recorder.flush()
        late = [e["message"] for e in await _recorded(api)]
        assert "Created pod: late" in late
        assert "Created pod: later" not in late

    asyncio.run(scenario())
