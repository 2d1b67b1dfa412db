"""Access reviews as kube-apiserver answers them: LocalSubjectAccessReview, and validation.

A namespace's ``admin`` asks through a LocalSubjectAccessReview whether another subject may act
in that namespace (what controllers and tools post), and only in that namespace; the reviews'
specs are validated with kube-apiserver's messages.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.server.process import ServerProcess
from tests.server.test_rbac import token_kubeconfig

pytestmark = pytest.mark.integration

NS = "lsar-team"
OTHER = "lsar-other"
GROUP = "/apis/authorization.k8s.io/v1"


def local_review(namespace: str, user: str, verb: str, resource: str) -> dict[str, Any]:
    return {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "LocalSubjectAccessReview",
        "metadata": {"namespace": namespace},
        "spec": {
            "user": user,
            "resourceAttributes": {"namespace": namespace, "verb": verb, "resource": resource},
        },
    }


@pytest.fixture(scope="module")
def team_admin(cluster: ServerProcess) -> Path:
    """An account that is ``admin`` of NS (a RoleBinding), nothing in OTHER."""
    for ns in (NS, OTHER):
        cluster.kubectl("create", "namespace", ns)
    cluster.kubectl("create", "serviceaccount", "lead", "-n", NS)
    cluster.kubectl(
        "create", "rolebinding", "lead-admin", "-n", NS, "--clusterrole=admin",
        f"--serviceaccount={NS}:lead",
    )  # fmt: skip
    cluster.kubectl("create", "role", "cm-reader", "-n", NS, "--verb=get", "--resource=configmaps")
    cluster.kubectl(
        "create", "rolebinding", "bob-reads", "-n", NS, "--role=cm-reader", "--user=bob"
    )
    token = cluster.kubectl("create", "token", "lead", "-n", NS).stdout.strip()
    return token_kubeconfig(cluster, token, "lead")


def test_discovery_lists_local_subject_access_reviews(cluster: ServerProcess) -> None:
    out = cluster.kubectl("api-resources", "--api-group=authorization.k8s.io", "-o", "wide").stdout
    line = next(row for row in out.splitlines() if row.startswith("localsubjectaccessreviews"))
    assert line.split()[1:] == [
        "authorization.k8s.io/v1",
        "true",
        "LocalSubjectAccessReview",
        "create",
    ]
    explained = cluster.kubectl("explain", "localsubjectaccessreview.spec").stdout
    assert "resourceAttributes" in explained


def test_a_namespace_admin_asks_about_another_user(
    cluster: ServerProcess, team_admin: Path
) -> None:
    path = f"{GROUP}/namespaces/{NS}/localsubjectaccessreviews"
    code, answer = cluster.request("POST", path, local_review(NS, "bob", "get", "configmaps"))
    assert code == 201, answer
    assert answer["kind"] == "LocalSubjectAccessReview"
    assert answer["metadata"]["namespace"] == NS
    assert answer["status"]["allowed"] is True
    code, answer = cluster.request("POST", path, local_review(NS, "bob", "delete", "configmaps"))
    assert answer["status"]["allowed"] is False
    # The namespace's admin may ask there (the admin role grants it), not in another namespace.
    # (--validate=false: kubectl validates a kind without a patch operation by listing CRDs.)
    review = local_review(NS, "bob", "get", "configmaps")
    allowed = cluster.kubectl(
        "--kubeconfig", str(team_admin), "create", "--validate=false",
        "-o", "jsonpath={.status.allowed}", "-f", "-",
        stdin=json.dumps(review),
    )  # fmt: skip
    assert allowed.stdout.strip() == "true"
    refused = cluster.kubectl(
        "--kubeconfig", str(team_admin), "create", "--validate=false", "-f", "-",
        stdin=json.dumps(local_review(OTHER, "bob", "get", "configmaps")), check=False,
    )  # fmt: skip
    assert refused.returncode != 0
    assert (
        'Error from server (Forbidden): error when creating "STDIN": '
        'localsubjectaccessreviews.authorization.k8s.io is forbidden: User "system:serviceaccount:'
        f'{NS}:lead" cannot create resource "localsubjectaccessreviews" in API group '
        f'"authorization.k8s.io" in the namespace "{OTHER}"\n'
    ) == refused.stderr


def test_local_review_namespace_must_match(cluster: ServerProcess, team_admin: Path) -> None:
    review = local_review(NS, "bob", "get", "configmaps")
    review["spec"]["resourceAttributes"]["namespace"] = OTHER
    path = f"{GROUP}/namespaces/{NS}/localsubjectaccessreviews"
    code, answer = cluster.request("POST", path, review)
    assert code == 422, answer
    assert answer["message"] == (
        'LocalSubjectAccessReview.authorization.k8s.io "" is invalid: '
        f'spec.resourceAttributes.namespace: Invalid value: "{OTHER}": must match '
        "metadata.namespace"
    )
    review = local_review(OTHER, "bob", "get", "configmaps")
    code, answer = cluster.request("POST", path, review)
    assert code == 400, answer
    assert "does not match the namespace sent on the request" in answer["message"]
    review = local_review(NS, "bob", "get", "configmaps")
    review["spec"]["nonResourceAttributes"] = {"verb": "get", "path": "/healthz"}
    del review["spec"]["resourceAttributes"]
    code, answer = cluster.request("POST", path, review)
    assert code == 422, answer
    assert "disallowed on this kind of request" in answer["message"]


def test_review_specs_are_validated(cluster: ServerProcess) -> None:
    code, answer = cluster.request(
        "POST",
        f"{GROUP}/subjectaccessreviews",
        {"spec": {"resourceAttributes": {"verb": "get", "resource": "pods"}}},
    )
    assert code == 422, answer
    assert "at least one of user or group must be specified" in answer["message"]
    code, answer = cluster.request("POST", f"{GROUP}/selfsubjectaccessreviews", {"spec": {}})
    assert code == 422
    assert "exactly one of nonResourceAttributes or resourceAttributes" in answer["message"]
    code, answer = cluster.request("POST", f"{GROUP}/selfsubjectrulesreviews", {"spec": {}})
    assert (code, answer["message"]) == (400, "no namespace on request")


def test_official_client_local_review(cluster: ServerProcess, team_admin: Path) -> None:
    from kubernetes import client, config

    api = config.new_client_from_config(str(team_admin))
    with api:
        authz = client.AuthorizationV1Api(api)
        body = client.V1LocalSubjectAccessReview(
            metadata=client.V1ObjectMeta(namespace=NS),
            spec=client.V1SubjectAccessReviewSpec(
                user="bob",
                resource_attributes=client.V1ResourceAttributes(
                    namespace=NS, verb="get", resource="configmaps"
                ),
            ),
        )
        answer = authz.create_namespaced_local_subject_access_review(NS, body)
    assert answer.status.allowed is True


def test_token_review_names_the_holder(cluster: ServerProcess, team_admin: Path) -> None:
    """What an authenticating proxy asks: who holds this token (for my audience)?"""
    cluster.kubectl("create", "serviceaccount", "proxy", "-n", NS)
    cluster.kubectl(
        "create", "clusterrolebinding", "lsar-proxy", "--clusterrole=system:auth-delegator",
        f"--serviceaccount={NS}:proxy",
    )  # fmt: skip
    proxy = cluster.kubectl("create", "token", "proxy", "-n", NS).stdout.strip()
    held = cluster.kubectl("create", "token", "lead", "-n", NS, "--audience=vault").stdout.strip()
    path = "/apis/authentication.k8s.io/v1/tokenreviews"
    as_proxy = {"Authorization": f"Bearer {proxy}"}

    def review(token: str, *audiences: str) -> dict[str, Any]:
        body: dict[str, Any] = {"spec": {"token": token, "audiences": list(audiences)}}
        code, answer = cluster.request("POST", path, body, client_cert=False, headers=as_proxy)
        assert code == 201, answer
        assert answer["kind"] == "TokenReview"
        status: dict[str, Any] = answer["status"]
        return status

    answer = review(held, "vault")
    assert answer["authenticated"] is True
    assert answer["audiences"] == ["vault"]
    user = answer["user"]
    assert user["username"] == f"system:serviceaccount:{NS}:lead"
    assert user["groups"] == [
        "system:serviceaccounts",
        f"system:serviceaccounts:{NS}",
        "system:authenticated",
    ]
    account = json.loads(cluster.kubectl("get", "sa", "lead", "-n", NS, "-o", "json").stdout)
    assert user["uid"] == account["metadata"]["uid"]
    assert review(held, "elsewhere") == {
        "user": {},
        "error": "token audiences are invalid for the target audiences",
    }
    assert review("eyJhbGciOiJFUzI1NiJ9.e30.AAAA") == {"user": {}, "error": "invalid bearer token"}
    static = (cluster.data_dir / "server/cred/tokens").read_text().split(",")[0]
    answer = review(static)
    assert answer["authenticated"] is True
    assert "system:masters" in answer["user"]["groups"]
    assert answer["audiences"] == ["https://kubernetes.default.svc.cluster.local"]
    # A token for Vault is no credential for the API itself.
    body = {"spec": {"token": proxy}}
    vault = {"Authorization": f"Bearer {held}"}
    code, _ = cluster.request("POST", path, body, client_cert=False, headers=vault)
    assert code == 401
    # The review needs the auth-delegator role: the namespace's admin may not ask.
    own = cluster.kubectl("create", "token", "lead", "-n", NS).stdout.strip()
    lead = {"Authorization": f"Bearer {own}"}
    code, answer = cluster.request("POST", path, body, client_cert=False, headers=lead)
    assert code == 403, answer
    assert answer["message"] == (
        f'tokenreviews.authentication.k8s.io is forbidden: User "system:serviceaccount:{NS}:lead"'
        ' cannot create resource "tokenreviews" in API group "authentication.k8s.io" at the'
        " cluster scope"
    )
