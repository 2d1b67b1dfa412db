"""RBAC with the real kubectl: can-i for the admin, a node and accounts; Roles; escalation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.server.process import ServerProcess

pytestmark = pytest.mark.integration

NS = "rbac-team"
OTHER = "rbac-other"


def token_kubeconfig(cluster: ServerProcess, token: str, name: str) -> Path:
    """A kubeconfig holding only a bearer token (as an in-cluster client has)."""
    path = cluster.root / f"{name}.kubeconfig"
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "k3py",
                "cluster": {
                    "server": cluster.url,
                    "certificate-authority": str(cluster.data_dir / "server/tls/server-ca.crt"),
                },
            }
        ],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": "k3py", "user": name}}],
        "current-context": name,
    }
    path.write_text(yaml.safe_dump(config))
    return path


def as_account(cluster: ServerProcess, config: Path, *args: str, check: bool = False) -> str:
    result = cluster.kubectl("--kubeconfig", str(config), *args, check=check)
    return (result.stdout + result.stderr).strip()


@pytest.fixture(scope="module")
def robot(cluster: ServerProcess) -> Path:
    for ns in (NS, OTHER):
        cluster.kubectl("create", "namespace", ns)
    cluster.kubectl("create", "serviceaccount", "robot", "-n", NS)
    token = cluster.kubectl("create", "token", "robot", "-n", NS).stdout.strip()
    return token_kubeconfig(cluster, token, "robot")


def test_admin_can_do_anything(cluster: ServerProcess) -> None:
    assert cluster.kubectl("auth", "can-i", "*", "*").stdout.strip() == "yes"
    roles = cluster.kubectl("get", "clusterroles", "-o", "name").stdout.split()
    for role in ("cluster-admin", "admin", "edit", "view", "system:basic-user"):
        assert f"clusterrole.rbac.authorization.k8s.io/{role}" in roles


def test_account_needs_a_binding(cluster: ServerProcess, robot: Path) -> None:
    assert as_account(cluster, robot, "auth", "can-i", "list", "pods", "-n", NS) == "no"
    refused = as_account(cluster, robot, "get", "pods", "-n", NS)
    assert "Forbidden" in refused
    assert f'User "system:serviceaccount:{NS}:robot" cannot list resource "pods"' in refused
    cluster.kubectl(
        "create", "role", "pod-reader", "-n", NS, "--verb=get,list,watch", "--resource=pods"
    )
    cluster.kubectl(
        "create", "rolebinding", "robot-reads", "-n", NS, "--role=pod-reader",
        f"--serviceaccount={NS}:robot",
    )  # fmt: skip
    assert as_account(cluster, robot, "auth", "can-i", "list", "pods", "-n", NS) == "yes"
    assert as_account(cluster, robot, "auth", "can-i", "delete", "pods", "-n", NS) == "no"
    assert as_account(cluster, robot, "auth", "can-i", "list", "pods", "-n", OTHER) == "no"
    assert "No resources found" in as_account(cluster, robot, "get", "pods", "-n", NS, check=True)
    assert "Forbidden" in as_account(cluster, robot, "get", "pods", "-n", OTHER)
    rules = as_account(cluster, robot, "auth", "can-i", "--list", "-n", NS, check=True)
    assert any(
        line.split()[:1] == ["pods"] and "[get list watch]" in line for line in rules.splitlines()
    )
    who = json.loads(as_account(cluster, robot, "auth", "whoami", "-o", "json", check=True))
    assert who["status"]["userInfo"]["username"] == f"system:serviceaccount:{NS}:robot"
    # The binding gone, the access goes with it (the decision cache follows RBAC changes).
    cluster.kubectl("delete", "rolebinding", "robot-reads", "-n", NS)
    assert as_account(cluster, robot, "auth", "can-i", "list", "pods", "-n", NS) == "no"


def test_can_i_as_an_account_through_impersonation(cluster: ServerProcess, robot: Path) -> None:
    account = f"system:serviceaccount:{NS}:robot"
    as_robot = ("auth", "can-i", "--as", account)
    assert (
        cluster.kubectl(*as_robot, "create", "pods", "-n", NS, check=False).stdout.strip() == "no"
    )
    assert cluster.kubectl(*as_robot, "create", "selfsubjectaccessreviews").stdout.strip() == "yes"
    # The account may not impersonate anyone.
    refused = as_account(cluster, robot, "get", "pods", "-n", NS, "--as", "someone")
    assert 'users "someone" is forbidden' in refused
    assert "cannot impersonate" in refused


def test_cluster_role_aggregation_and_view(cluster: ServerProcess, robot: Path) -> None:
    cluster.kubectl(
        "create", "rolebinding", "robot-views", "-n", OTHER, "--clusterrole=view",
        f"--serviceaccount={NS}:robot",
    )  # fmt: skip
    assert as_account(cluster, robot, "auth", "can-i", "list", "deployments", "-n", OTHER) == "yes"
    assert as_account(cluster, robot, "auth", "can-i", "get", "secrets", "-n", OTHER) == "no"
    assert as_account(cluster, robot, "auth", "can-i", "list", "pods", "-n", NS) == "no"


def test_a_node_as_the_authorizer_sees_it(cluster: ServerProcess) -> None:
    review: dict[str, Any] = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": "system:node:n1",
            "groups": ["system:nodes", "system:authenticated"],
            "resourceAttributes": {"verb": "list", "resource": "nodes"},
        },
    }
    code, answer = cluster.request(
        "POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", review
    )
    assert code == 201, answer
    assert answer["status"]["allowed"] is True
    review["spec"]["resourceAttributes"] = {"verb": "delete", "resource": "nodes", "name": "n2"}
    code, answer = cluster.request(
        "POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", review
    )
    assert answer["status"]["allowed"] is False


def test_escalation_is_refused(cluster: ServerProcess, robot: Path) -> None:
    cluster.kubectl(
        "create", "role", "role-manager", "-n", NS, "--verb=create,get,list",
        "--resource=roles.rbac.authorization.k8s.io,rolebindings.rbac.authorization.k8s.io,configmaps",
    )  # fmt: skip
    cluster.kubectl(
        "create", "rolebinding", "robot-manages", "-n", NS, "--role=role-manager",
        f"--serviceaccount={NS}:robot",
    )  # fmt: skip
    refused = as_account(
        cluster,
        robot,
        "create",
        "role",
        "secret-reader",
        "-n",
        NS,
        "--verb=get",
        "--resource=secrets",
    )
    assert 'roles.rbac.authorization.k8s.io "secret-reader" is forbidden' in refused
    assert "attempting to grant RBAC permissions not currently held" in refused
    created = as_account(
        cluster, robot, "create", "role", "cm-reader", "-n", NS, "--verb=get",
        "--resource=configmaps", check=True,
    )  # fmt: skip
    assert "created" in created
    bound = as_account(
        cluster, robot, "create", "rolebinding", "self-admin", "-n", NS, "--clusterrole=admin",
        f"--serviceaccount={NS}:robot",
    )  # fmt: skip
    assert 'rolebindings.rbac.authorization.k8s.io "self-admin" is forbidden' in bound
