"""ServiceAccount tokens for this node's pods, requested from the API and renewed before expiry.

A pod's projected ``serviceAccountToken`` source becomes a file holding a token the server
issues through the TokenRequest API, bound to the pod (``boundObjectRef``), for the source's
audience and lifetime. As the kubelet's token manager does, :class:`PodTokens` asks again once
80 % of a token's lifetime has passed, and tells its owner which pod's token changed so that
the pod's projected volume is rewritten. Tokens live in memory only: a restarted agent asks
for fresh ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from k3py.cluster.agent.following import Following
from k3py.cluster.api.resources import by_kind
from k3py.cluster.api.status import ApiError
from k3py.cluster.client import ClientError, KubeApi

logger = logging.getLogger("k3py.agent.tokens")

Object = dict[str, Any]
ACCOUNTS = by_kind("v1", "ServiceAccount")
RENEW_FRACTION = 0.8
RETRY_SECONDS = 5.0
DEFAULT_EXPIRATION = 3600


@dataclass(frozen=True)
class TokenKey:
    namespace: str
    account: str
    pod: str
    pod_uid: str
    audience: str
    expiration: int


@runtime_checkable
class TokenSource(Protocol):
    """Where projected volumes find a pod's ServiceAccount tokens."""

    def service_account_token(self, pod: Object, source: Object) -> str | None: ...


def key_for(pod: Object, source: Object) -> TokenKey:
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    return TokenKey(
        str(meta.get("namespace") or "default"),
        str(spec.get("serviceAccountName") or "default"),
        str(meta.get("name") or ""),
        str(meta.get("uid") or ""),
        str(source.get("audience") or ""),
        int(source.get("expirationSeconds") or DEFAULT_EXPIRATION),
    )


def token_sources(pod: Object) -> list[Object]:
    """The pod's projected ``serviceAccountToken`` sources."""
    found = []
    for volume in (pod.get("spec") or {}).get("volumes") or []:
        projected = volume.get("projected") if isinstance(volume, dict) else None
        for part in (projected or {}).get("sources") or []:
            if isinstance(part, dict) and isinstance(part.get("serviceAccountToken"), dict):
                found.append(part["serviceAccountToken"])
    return found


class PodTokens(Following[TokenKey, tuple[str, float]]):
    """Keeps a fresh token for every ``serviceAccountToken`` source of the followed pods.

    Held for each key: the token and the loop time to renew it at.
    """

    def __init__(self, api: KubeApi, on_change: Callable[[str], None]) -> None:
        super().__init__("pod-tokens")
        self._api = api
        self._on_change = on_change

    def token(self, pod: Object, source: Object) -> str | None:
        entry = self._held.get(key_for(pod, source))
        return entry[0] if entry else None

    def follow(self, pods: Iterable[Object]) -> None:
        wanted = {key_for(pod, source) for pod in pods for source in token_sources(pod)}
        self._follow(wanted)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._wake.clear()
            now = loop.time()
            due = [k for k in self._wanted if k not in self._held or self._held[k][1] <= now]
            reachable = True
            for key in sorted(due, key=lambda k: (k.namespace, k.pod, k.audience)):
                if not await self._request(key, loop.time()):
                    reachable = False
                    break
            if reachable:
                renewals = [renew for _, renew in self._held.values()]
                timeout = max(1.0, min(renewals) - loop.time()) if renewals else None
            else:
                timeout = RETRY_SECONDS
            if self._wanted - self._held.keys():  # refused ones: ask again a while later
                timeout = min(timeout or RETRY_SECONDS * 6, RETRY_SECONDS * 6)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def _request(self, key: TokenKey, now: float) -> bool:
        """Ask for ``key``'s token; False when the server could not be reached."""
        assert ACCOUNTS is not None
        spec: Object = {
            "expirationSeconds": key.expiration,
            "boundObjectRef": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": key.pod,
                "uid": key.pod_uid,
            },
        }
        if key.audience:
            spec["audiences"] = [key.audience]
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}
        try:
            answer = await self._api.create(
                ACCOUNTS,
                {**body, "metadata": {"name": key.account}},
                key.namespace,
                subresource="token",
            )
        except ApiError as err:
            logger.warning(
                "cannot get a ServiceAccount token",
                extra={"fields": {"pod": f"{key.namespace}/{key.pod}", "error": str(err)}},
            )
            # Retry later rather than at once: the account may appear, the pod may go.
            self._held.pop(key, None)
            return True
        except ClientError:
            return False
        token = str((answer.get("status") or {}).get("token") or "")
        if not token or key not in self._wanted:
            return True
        self._held[key] = (token, now + key.expiration * RENEW_FRACTION)
        self._on_change(key.pod_uid)
        return True
