"""ServiceAccounts: tokens from ``kubectl create token``, pods' API credentials, root CA."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import pytest

from k3py.cluster.server.satoken import (
    Binding,
    ServiceAccountTokens,
    TokenError,
    ensure_signing_key,
)
from tests.server.process import ServerProcess

NS = "satest"


def _claims(token: str) -> dict[str, object]:
    payload = token.split(".")[1]
    decoded: dict[str, object] = json.loads(base64.urlsafe_b64decode(payload + "=" * 4))
    return decoded


def test_token_round_trip_and_refusals(tmp_path: Path) -> None:
    tokens = ServiceAccountTokens(ensure_signing_key(tmp_path))
    binding = Binding("ns", "sa", "uid-1", "pod", "uid-2")
    token, expires = tokens.issue(binding, ["api"], 600, now=1000)
    assert expires == 1600
    found, claims = tokens.verify(token, now=1100)
    assert found == binding
    assert claims["sub"] == "system:serviceaccount:ns:sa"
    assert claims["aud"] == ["api"]
    with pytest.raises(TokenError, match="expired"):
        tokens.verify(token, now=1601)
    head, body, sig = token.split(".")
    forged = body[:-2] + ("AA" if body[-2:] != "AA" else "BB")
    with pytest.raises(TokenError):
        tokens.verify(f"{head}.{forged}.{sig}", now=1100)
    other = ServiceAccountTokens(ensure_signing_key(tmp_path / "other"))
    with pytest.raises(TokenError, match="signature"):
        other.verify(token, now=1100)
    # The key persists: a restarted server verifies the tokens it issued before.
    again = ServiceAccountTokens(ensure_signing_key(tmp_path))
    assert again.verify(token, now=1100)[0] == binding


async def test_an_authenticated_token_is_trusted_briefly(tmp_path: Path) -> None:
    tokens = ServiceAccountTokens(ensure_signing_key(tmp_path))
    token, _ = tokens.issue(Binding("ns", "sa", "uid-1", "", ""), [], 600)  # the API's audience
    lookups: list[str] = []

    async def uid_of(resource: str, namespace: str, name: str) -> str | None:
        lookups.append(name)
        return "uid-1"

    for _ in range(3):
        user = await tokens.authenticate(token, uid_of)
        assert user is not None
        assert user.name == "system:serviceaccount:ns:sa"
    assert lookups == ["sa"]  # checked once, then trusted
    tokens.forget("other")
    await tokens.authenticate(token, uid_of)
    assert lookups == ["sa"]
    tokens.forget("ns")  # a deletion in its namespace: checked afresh
    await tokens.authenticate(token, uid_of)
    assert lookups == ["sa", "sa"]
    # A token for another audience (Vault's, say) is valid but no credential for the API.
    elsewhere, _ = tokens.issue(Binding("ns", "sa", "uid-1", "", ""), ["vault"], 600)
    assert await tokens.review(elsewhere, uid_of) is not None
    assert await tokens.authenticate(elsewhere, uid_of) is None


def _as_token(cluster: ServerProcess, token: str, path: str) -> int:
    code, _ = cluster.request(
        "GET", path, client_cert=False, headers={"Authorization": f"Bearer {token}"}
    )
    return code


@pytest.mark.integration
def test_service_account_life_cycle(cluster: ServerProcess) -> None:
    cluster.kubectl("create", "namespace", NS)
    root_ca = json.loads(
        cluster.kubectl("get", "configmap", "kube-root-ca.crt", "-n", NS, "-o", "json").stdout
    )
    assert "BEGIN CERTIFICATE" in root_ca["data"]["ca.crt"]
    cluster.kubectl("create", "serviceaccount", "robot", "-n", NS)
    token = cluster.kubectl("create", "token", "robot", "-n", NS).stdout.strip()
    claims = _claims(token)
    assert claims["sub"] == f"system:serviceaccount:{NS}:robot"
    assert claims["iss"] == "https://kubernetes.default.svc.cluster.local"
    lifetime = int(str(claims["exp"])) - int(str(claims["iat"]))
    assert lifetime == 3600
    assert _as_token(cluster, token, "/api") == 200  # authenticated: discovery
    assert _as_token(cluster, "eyJ.bad.token", "/api") == 401
    cluster.kubectl("delete", "serviceaccount", "robot", "-n", NS)
    assert _as_token(cluster, token, "/api") == 401  # the account is gone
    short = cluster.kubectl(
        "create", "token", "default", "-n", NS, "--duration", "10m", "--audience", "x"
    ).stdout.strip()
    assert _claims(short)["aud"] == ["x"]


@pytest.mark.integration
def test_pods_get_their_account_and_credentials(cluster: ServerProcess) -> None:
    cluster.kubectl("create", "namespace", NS + "-pods")
    manifest = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "namespace": NS + "-pods"},
                "spec": {
                    "containers": [{"name": "c", "image": "busybox"}],
                    **({"automountServiceAccountToken": False} if name == "quiet" else {}),
                },
            }
            for name in ("chatty", "quiet")
        ],
    }
    cluster.kubectl("apply", "-f", "-", stdin=json.dumps(manifest))
    chatty = json.loads(
        cluster.kubectl("get", "pod", "chatty", "-n", NS + "-pods", "-o", "json").stdout
    )
    assert chatty["spec"]["serviceAccountName"] == "default"
    volume = chatty["spec"]["volumes"][0]
    assert volume["name"].startswith("kube-api-access-")
    sources = volume["projected"]["sources"]
    assert sources[0]["serviceAccountToken"]["path"] == "token"
    assert sources[1]["configMap"]["name"] == "kube-root-ca.crt"
    mount = chatty["spec"]["containers"][0]["volumeMounts"][0]
    assert mount == {
        "name": volume["name"],
        "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
        "readOnly": True,
    }
    quiet = json.loads(
        cluster.kubectl("get", "pod", "quiet", "-n", NS + "-pods", "-o", "json").stdout
    )
    assert quiet["spec"]["serviceAccountName"] == "default"
    assert not quiet["spec"].get("volumes")
    # A token bound to the pod stops working once the pod is gone.
    code, answer = cluster.request(
        "POST",
        f"/api/v1/namespaces/{NS}-pods/serviceaccounts/default/token",
        {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "boundObjectRef": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": "chatty",
                    "uid": chatty["metadata"]["uid"],
                }
            },
        },
    )
    assert code == 201, answer
    bound = answer["status"]["token"]
    assert _claims(bound)["kubernetes.io"]["pod"]["name"] == "chatty"  # type: ignore[index]
    assert _as_token(cluster, bound, "/api") == 200
    cluster.kubectl(
        "delete", "pod", "chatty", "-n", NS + "-pods", "--grace-period=0", "--force", "--wait=false"
    )
    deadline = time.monotonic() + 10
    while _as_token(cluster, bound, "/api") != 401:
        assert time.monotonic() < deadline, "the pod's token still works after its deletion"
        time.sleep(0.2)


@pytest.mark.integration
def test_a_pod_naming_a_missing_account_is_refused(cluster: ServerProcess) -> None:
    ns = NS + "-ghost"
    cluster.kubectl("create", "namespace", ns)
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "haunted", "namespace": ns},
        "spec": {"serviceAccountName": "ghost", "containers": [{"name": "c", "image": "busybox"}]},
    }
    refused = cluster.kubectl("create", "-f", "-", stdin=json.dumps(pod), check=False)
    assert refused.returncode != 0
    assert (
        'Error from server (Forbidden): error when creating "STDIN": pods "haunted" is forbidden: '
        f'error looking up service account {ns}/ghost: serviceaccount "ghost" not found'
    ) in refused.stderr
    # Controllers' pods meet the same refusal, reported as the owner's FailedCreate Event; once
    # the account exists the controllers' retries create them.
    template = {"metadata": {"labels": {"app": "ghost"}}, "spec": pod["spec"]}
    replicaset = {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {"name": "haunted", "namespace": ns},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "ghost"}},
            "template": template,
        },
    }
    job_spec = {**pod["spec"], "restartPolicy": "Never"}
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "haunted-job", "namespace": ns},
        "spec": {"template": {"spec": job_spec}},
    }
    for owner in (replicaset, job):
        cluster.kubectl("create", "-f", "-", stdin=json.dumps(owner))
    why = (
        f"is forbidden: error looking up service account {ns}/ghost: "
        'serviceaccount "ghost" not found'
    )
    expected = {
        ("ReplicaSet", "haunted"): f'Error creating: pods "haunted-" {why}',
        ("Job", "haunted-job"): f'Error creating: pods "haunted-job-" {why}',
    }

    def failed_creates() -> dict[tuple[str, str], str]:
        events = cluster.kubectl(
            "get", "events", "-n", ns, "--field-selector=reason=FailedCreate", "-o", "json"
        ).stdout
        return {
            (e["involvedObject"]["kind"], e["involvedObject"]["name"]): e["message"]
            for e in json.loads(events)["items"]
        }

    deadline = time.monotonic() + 15
    while len(failed_creates()) < 2:
        assert time.monotonic() < deadline, f"FailedCreate events: {failed_creates()}"
        time.sleep(0.3)
    assert failed_creates() == expected
    cluster.kubectl("create", "serviceaccount", "ghost", "-n", ns)
    # A deleted default account comes back when a pod needs it (as its controller makes it).
    cluster.kubectl("delete", "serviceaccount", "default", "-n", ns)
    plain = {**pod, "metadata": {"name": "plain", "namespace": ns}}
    plain["spec"] = {"containers": pod["spec"]["containers"]}
    cluster.kubectl("create", "-f", "-", stdin=json.dumps(plain))
    cluster.kubectl("get", "serviceaccount", "default", "-n", ns)

    def pods() -> int:
        return len(
            json.loads(cluster.kubectl("get", "pods", "-n", ns, "-o", "json").stdout)["items"]
        )

    deadline = time.monotonic() + 30
    while pods() < 3:
        assert time.monotonic() < deadline, "the controllers made no pods once the account existed"
        time.sleep(0.5)
