"""The async Kubernetes API client the controllers and the agent share, on aiohttp.

:class:`KubeClient` speaks the REST API of any Kubernetes-compatible server (k3py's own over
loopback, or a real one): get, list (following ``continue``), watch (a stream of
``(type, object)``), create, update, patch (merge, strategic, JSON) and delete, for every
:class:`ResourceInfo` in the registry, with subresources. Failure responses carry a ``Status``;
they are raised as :class:`~k3py.cluster.api.status.ApiError` with the code, reason, message and
causes the server sent, so callers branch on ``err.code == 409`` or ``err.reason == "Expired"``
exactly as client-go users do. A server that cannot be reached raises :class:`Unreachable`.

A client made with ``light_start=True`` sends its requests over the standard library
(:mod:`.blocking`) until :meth:`KubeClient.use_aiohttp`, and does not import aiohttp before:
the agent registers its Node that way while aiohttp, the largest import of its start, waits.
"""

from __future__ import annotations

import asyncio
import builtins
import http.client
import json
import logging
import ssl
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote

from k3py.cluster.api.resources import ResourceInfo
from k3py.cluster.api.status import ApiError, Cause
from k3py.errors import K3pyError

if TYPE_CHECKING:
    import aiohttp

    from k3py.cluster.client.blocking import Connection

logger = logging.getLogger("k3py.client")

Object = dict[str, Any]
PatchType = Literal["merge", "strategic", "json"]

PATCH_CONTENT_TYPES: Mapping[str, str] = {
    "merge": "application/merge-patch+json",
    "strategic": "application/strategic-merge-patch+json",
    "json": "application/json-patch+json",
}
_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Expired",
    413: "RequestEntityTooLarge",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}
LIST_PAGE_SIZE = 500
REQUEST_TIMEOUT = 30.0


class ClientError(K3pyError):
    """The API server could not be asked (as opposed to answering with a Status)."""


class Unreachable(ClientError):
    """The API server did not answer: refused, reset, TLS failure or timeout."""


def error_from_status(code: int, body: Any, fallback: str = "") -> ApiError:
    """Rebuild the :class:`ApiError` a ``Status`` body describes (or a plain one from ``code``)."""
    if isinstance(body, dict) and body.get("kind") == "Status":
        details = body.get("details") or {}
        causes = [
            Cause(str(c.get("reason", "")), str(c.get("message", "")), str(c.get("field", "")))
            for c in details.get("causes") or []
            if isinstance(c, dict)
        ]
        return ApiError(
            int(body.get("code") or code),
            str(body.get("reason") or _REASONS.get(code, "Unknown")),
            str(body.get("message") or fallback or f"the server answered {code}"),
            name=str(details.get("name", "")),
            group=str(details.get("group", "")),
            kind=str(details.get("kind", "")),
            causes=causes,
            retry_after_seconds=int(details.get("retryAfterSeconds") or 0),
        )
    message = fallback.strip() or f"the server answered {code}"
    return ApiError(code, _REASONS.get(code, "Unknown"), message)


def resource_path(
    info: ResourceInfo, namespace: str | None = None, name: str = "", subresource: str = ""
) -> str:
    """The URL path of a collection, an object, or an object's subresource."""
    base = f"/apis/{info.group}/{info.version}" if info.group else f"/api/{info.version}"
    if info.namespaced and namespace:
        base += f"/namespaces/{quote(namespace, safe='')}"
    path = f"{base}/{info.plural}"
    if name:
        path += f"/{quote(name, safe='')}"
        if subresource:
            path += f"/{subresource}"
    return path


def _meta(obj: Object) -> dict[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


class KubeClient:
    """One connection pool to one API server, authenticated by client certificate or token."""

    def __init__(
        self,
        server_url: str,
        *,
        ssl_context: ssl.SSLContext | None,
        token: str | None = None,
        user_agent: str = "k3py",
        max_connections: int = 64,
        light_start: bool = False,
    ) -> None:
        self.server_url = server_url.rstrip("/")
        self._ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else False
        self._headers = {"Accept": "application/json", "User-Agent": user_agent}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        self._light: Connection | None = None
        if light_start:
            from k3py.cluster.client.blocking import Connection

            self._light = Connection(self.server_url, ssl_context, self._headers)

    @classmethod
    def from_kubeconfig(cls, path: str | Path, *, context: str | None = None) -> KubeClient:
        from k3py.cluster.client.kubeconfig import read_kubeconfig

        creds = read_kubeconfig(Path(path), context)
        return cls(creds.server_url, ssl_context=creds.ssl_context, token=creds.token)

    def use_aiohttp(self) -> None:
        """From now on every request goes over aiohttp (which the first one imports)."""
        if self._light is not None:
            self._light.close()
            self._light = None

    def _client(self) -> aiohttp.ClientSession:
        import aiohttp

        self.use_aiohttp()  # a watch needs aiohttp: the light start ends with the first one
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(ssl=self._ssl, limit=self._max_connections)
            self._session = aiohttp.ClientSession(
                self.server_url, connector=connector, headers=self._headers
            )
        return self._session

    async def close(self) -> None:
        if self._light is not None:
            self._light.close()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> KubeClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        deadline: float = REQUEST_TIMEOUT,
    ) -> Any:
        """One request; the decoded JSON answer, or ApiError / Unreachable."""
        data = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        headers = {"Content-Type": content_type} if data is not None else None
        if self._light is not None:
            try:
                status, raw = await asyncio.to_thread(
                    self._light.request,
                    method, path, params=params, body=data, headers=headers, deadline=deadline,
                )  # fmt: skip
            except (http.client.HTTPException, OSError) as err:
                raise self._unreachable(method, path, err) from err
        else:
            status, raw = await self._request_aiohttp(method, path, params, data, headers, deadline)
        try:
            decoded = json.loads(raw) if raw else None
        except ValueError:
            decoded = None
        if status >= 400:
            raise error_from_status(status, decoded, raw.decode("utf-8", "replace")[:500])
        return decoded

    async def _request_aiohttp(
        self,
        method: str,
        path: str,
        params: Mapping[str, str] | None,
        data: bytes | None,
        headers: dict[str, str] | None,
        deadline: float,
    ) -> tuple[int, bytes]:
        import aiohttp

        try:
            async with self._client().request(
                method,
                path,
                params=params,
                data=data,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=deadline),
            ) as resp:
                return resp.status, await resp.read()
        except (aiohttp.ClientError, TimeoutError, OSError) as err:
            raise self._unreachable(method, path, err) from err

    def _unreachable(self, method: str, path: str, err: BaseException) -> Unreachable:
        return Unreachable(
            f"cannot reach the API server at {self.server_url} ({method} {path}): "
            f"{err or type(err).__name__}"
        )

    async def get(
        self, info: ResourceInfo, name: str, namespace: str | None = None, *, subresource: str = ""
    ) -> Object:
        result: Object = await self.request(
            "GET", resource_path(info, namespace, name, subresource)
        )
        return result

    async def list(
        self,
        info: ResourceInfo,
        namespace: str | None = None,
        *,
        label_selector: str = "",
        field_selector: str = "",
        resource_version: str = "",
    ) -> tuple[builtins.list[Object], str]:
        """Every matching object (all pages) and the list's resourceVersion."""
        params: dict[str, str] = {"limit": str(LIST_PAGE_SIZE)}
        if label_selector:
            params["labelSelector"] = label_selector
        if field_selector:
            params["fieldSelector"] = field_selector
        if resource_version:
            params["resourceVersion"] = resource_version
        path = resource_path(info, namespace)
        items: builtins.list[Object] = []
        list_version = ""
        while True:
            page = await self.request("GET", path, params=params)
            items.extend(page.get("items") or [])
            meta = page.get("metadata") or {}
            list_version = list_version or str(meta.get("resourceVersion") or "")
            token = meta.get("continue")
            if not token:
                break
            params = {k: v for k, v in params.items() if k != "resourceVersion"}
            params["continue"] = str(token)
        for item in items:
            # List items carry no apiVersion/kind on the wire; handlers want whole objects.
            item.setdefault("apiVersion", info.api_version)
            item.setdefault("kind", info.kind)
        return items, list_version

    async def watch(
        self,
        info: ResourceInfo,
        namespace: str | None = None,
        *,
        resource_version: str,
        label_selector: str = "",
        field_selector: str = "",
        timeout_seconds: int | None = None,
    ) -> AsyncIterator[tuple[str, Object]]:
        """``(type, object)`` from ``resource_version`` on: ADDED, MODIFIED, DELETED, BOOKMARK.

        Ends when the server closes the stream (its timeout); an ERROR event is raised as the
        ApiError it carries (410 Expired: list again).
        """
        params = {"watch": "1", "allowWatchBookmarks": "true"}
        if resource_version:
            params["resourceVersion"] = resource_version
        if label_selector:
            params["labelSelector"] = label_selector
        if field_selector:
            params["fieldSelector"] = field_selector
        if timeout_seconds is not None:
            params["timeoutSeconds"] = str(timeout_seconds)
        path = resource_path(info, namespace)
        # No total deadline: a quiet watch is healthy. The server ends it at timeoutSeconds.
        total = None if timeout_seconds is None else timeout_seconds + REQUEST_TIMEOUT
        import aiohttp

        try:
            async with self._client().get(
                path, params=params, timeout=aiohttp.ClientTimeout(total=total, connect=10)
            ) as resp:
                if resp.status >= 400:
                    raw = await resp.read()
                    try:
                        decoded = json.loads(raw) if raw else None
                    except ValueError:
                        decoded = None
                    raise error_from_status(resp.status, decoded, raw.decode("utf-8", "replace"))
                buffer = b""
                async for chunk in resp.content.iter_any():
                    buffer += chunk
                    while b"\n" in buffer:
                        line, buffer = buffer.split(b"\n", 1)
                        if line.strip():
                            yield _watch_event(line, info)
                if buffer.strip():
                    yield _watch_event(buffer, info)
        except (aiohttp.ClientError, TimeoutError, OSError) as err:
            raise Unreachable(
                f"watch of {info.plural} at {self.server_url} broke: {err or type(err).__name__}"
            ) from err

    async def create(
        self,
        info: ResourceInfo,
        obj: Object,
        namespace: str | None = None,
        *,
        subresource: str = "",
    ) -> Object:
        ns = namespace or _meta(obj).get("namespace")
        if subresource:
            # binding, eviction: posted to the named object's subresource.
            path = resource_path(info, ns, str(_meta(obj).get("name", "")), subresource)
        else:
            path = resource_path(info, ns)
        result: Object = await self.request("POST", path, body=obj)
        return result

    async def update(self, info: ResourceInfo, obj: Object, *, subresource: str = "") -> Object:
        meta = _meta(obj)
        path = resource_path(info, meta.get("namespace"), str(meta.get("name", "")), subresource)
        result: Object = await self.request("PUT", path, body=obj)
        return result

    async def patch(
        self,
        info: ResourceInfo,
        name: str,
        patch: Object | builtins.list[Any],
        namespace: str | None = None,
        *,
        patch_type: PatchType = "merge",
        subresource: str = "",
    ) -> Object:
        result: Object = await self.request(
            "PATCH",
            resource_path(info, namespace, name, subresource),
            body=patch,
            content_type=PATCH_CONTENT_TYPES[patch_type],
        )
        return result

    async def delete(
        self,
        info: ResourceInfo,
        name: str,
        namespace: str | None = None,
        *,
        propagation_policy: str | None = None,
        grace_period_seconds: int | None = None,
        preconditions: Mapping[str, str] | None = None,
    ) -> Object | None:
        """Delete; the object (still there while finalizers run) or None if it is gone."""
        options: Object = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if propagation_policy is not None:
            options["propagationPolicy"] = propagation_policy
        if grace_period_seconds is not None:
            options["gracePeriodSeconds"] = grace_period_seconds
        if preconditions:
            options["preconditions"] = dict(preconditions)
        result = await self.request("DELETE", resource_path(info, namespace, name), body=options)
        if not isinstance(result, dict) or result.get("kind") == "Status":
            return None
        return result


def _watch_event(line: bytes, info: ResourceInfo) -> tuple[str, Object]:
    try:
        event = json.loads(line)
    except ValueError:
        raise ClientError(f"the watch of {info.plural} sent a line that is not JSON") from None
    kind = str(event.get("type", ""))
    obj = event.get("object") or {}
    if kind == "ERROR":
        raise error_from_status(int(obj.get("code") or 500), obj)
    return kind, obj
