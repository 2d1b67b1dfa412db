"""The surface reconcile loops program against, met by :class:`KubeClient` and :class:`FakeApi`.

Controllers and agent loops take a :class:`KubeApi`, so unit tests hand them the in-memory fake
and production hands them the HTTP client, with no other difference.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, Protocol

from k3py.cluster.api.resources import ResourceInfo
from k3py.cluster.client.informer import ListWatcher

Object = dict[str, Any]


class KubeApi(ListWatcher, Protocol):
    async def get(
        self, info: ResourceInfo, name: str, namespace: str | None = None, *, subresource: str = ""
    ) -> Object: ...

    async def create(
        self,
        info: ResourceInfo,
        obj: Object,
        namespace: str | None = None,
        *,
        subresource: str = "",
    ) -> Object: ...

    async def update(self, info: ResourceInfo, obj: Object, *, subresource: str = "") -> Object: ...

    async def patch(
        self,
        info: ResourceInfo,
        name: str,
        patch: Object | list[Any],
        namespace: str | None = None,
        *,
        patch_type: Literal["merge", "strategic", "json"] = "merge",
        subresource: str = "",
    ) -> Object: ...

    async def delete(
        self,
        info: ResourceInfo,
        name: str,
        namespace: str | None = None,
        *,
        propagation_policy: str | None = None,
        grace_period_seconds: int | None = None,
        preconditions: Mapping[str, str] | None = None,
    ) -> Object | None: ...
