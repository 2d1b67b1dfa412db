"""The agent's ServiceAccount tokens: requested per pod, renewed before expiry, projected."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from k3py.cluster.agent.podsync.volumes import PodVolumes
from k3py.cluster.agent.satokens import PodTokens

POD: dict[str, Any] = {
    "metadata": {"name": "web", "namespace": "shop", "uid": "u1"},
    "spec": {
        "serviceAccountName": "robot",
        "volumes": [
            {
                "name": "kube-api-access-x",
                "projected": {
                    "defaultMode": 0o644,
                    "sources": [
                        {"serviceAccountToken": {"expirationSeconds": 2, "path": "token"}},
                        {
                            "downwardAPI": {
                                "items": [
                                    {
                                        "path": "namespace",
                                        "fieldRef": {"fieldPath": "metadata.namespace"},
                                    }
                                ]
                            }
                        },
                    ],
                },
            }
        ],
    },
}


class TokenApi:
    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, Any]]] = []

    async def create(
        self, info: Any, obj: dict[str, Any], namespace: str | None = None, *, subresource: str = ""
    ) -> dict[str, Any]:
        assert subresource == "token"
        self.requests.append((str(namespace), obj["metadata"]["name"], obj["spec"]))
        return {"status": {"token": f"token-{len(self.requests)}"}}


class Objects:
    def __init__(self, tokens: PodTokens) -> None:
        self.tokens = tokens

    def config_map(self, namespace: str, name: str) -> dict[str, Any] | None:
        return None

    def secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        return None

    def service_account_token(self, pod: dict[str, Any], source: dict[str, Any]) -> str | None:
        return self.tokens.token(pod, source)


async def test_tokens_are_requested_bound_and_renewed(tmp_path: Path) -> None:
    api = TokenApi()
    changed: list[str] = []
    tokens = PodTokens(api, changed.append)  # type: ignore[arg-type]
    tokens.follow([POD])
    tokens.start()
    try:
        for _ in range(100):
            if changed:
                break
            await asyncio.sleep(0.02)
        namespace, account, spec = api.requests[0]
        assert (namespace, account) == ("shop", "robot")
        assert spec["boundObjectRef"] == {
            "apiVersion": "v1",
            "kind": "Pod",
            "name": "web",
            "uid": "u1",
        }
        volumes = PodVolumes(tmp_path)
        paths = volumes.setup(POD, Objects(tokens))
        directory = paths["kube-api-access-x"]
        assert (directory / "token").read_text() == "token-1"
        assert (directory / "namespace").read_text() == "shop"
        # 80 % of the 2 s lifetime later, a fresh token replaces it.
        for _ in range(150):
            if len(api.requests) >= 2:
                break
            await asyncio.sleep(0.02)
        assert volumes.refresh(POD, Objects(tokens))
        assert (directory / "token").read_text() == "token-2"
        tokens.follow([])
        assert tokens.token(POD, {"expirationSeconds": 2, "path": "token"}) is None
    finally:
        await tokens.stop()
