"""A k3py cluster on a :class:`~tests.netns.topology.Topology`: a server and an agent per host.

``k3py server`` runs in host 1's namespace (its own agent is host 1's node) and ``k3py agent``
in each other host's, all with the pod network backend asked for and ``--node-ip`` set to the
host's LAN address. They share the machine's Docker engine; node names carry the topology's
unique prefix, so containers are told apart by their ``io.k3py.node`` label and removed by it at
the end. kubectl runs inside host 1's namespace (the API is not reachable from the machine's).

API::

    with Topology(3) as topo, NetnsCluster(topo, tmp_path, backend="vxlan") as cluster:
        cluster.wait_ready()
        cluster.nodes                      # node names, host i → cluster.nodes[i]
        cluster.kubectl("get", "pods")     # CompletedProcess; cluster.kubectl_json(...)
        cluster.run_pod("web", node, ["httpd", "-f", "-p", "80", "-h", "/www"])
        cluster.pod_ip("web")              # status.podIP once Running
        cluster.exec("web", "ip", "addr")  # docker exec in the pod's container
        cluster.fetch("web", "10.42.2.5")  # HTTP GET from the pod (busybox nc); the body
        cluster.restart_agent(2)           # SIGTERM, start again (host index, 1-based)
        cluster.stop_server(); cluster.start_server()   # with its own agent (host 1's node)
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from types import TracebackType
from typing import Any

from tests.agent.cluster import docker, remove_node_containers, wait_until
from tests.agent.images import TEST_IMAGE, ensure_test_image
from tests.netns.topology import Host, Topology, stop
from tests.processes import k3py_argv

KUBECTL = "/usr/bin/kubectl"
API_PORT = 6443


class NetnsCluster:
    def __init__(
        self,
        topology: Topology,
        root: Path,
        *,
        backend: str = "vxlan",
        server_args: tuple[str, ...] = (),
        agent_args: tuple[str, ...] = (),
    ) -> None:
        self.topology = topology
        self.root = root
        self.backend = backend
        self.server_args = server_args
        self.agent_args = agent_args
        self.nodes = [f"{topology.prefix}-{host.name}" for host in topology.hosts]
        self.kubeconfig = root / "kubeconfig.yaml"
        self.server: subprocess.Popen[bytes] | None = None
        self.agents: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def server_host(self) -> Host:
        return self.topology.hosts[0]

    def host(self, index: int) -> Host:
        """Host ``index`` (1-based, as the namespaces are named)."""
        return self.topology.hosts[index - 1]

    def log(self, name: str) -> Path:
        return self.root / f"{name}.log"

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> NetnsCluster:
        ensure_test_image()
        self.root.mkdir(parents=True, exist_ok=True)
        self.start_server()
        wait_until(lambda: self._token_file().exists(), 30, "the join token")
        for index in range(2, len(self.topology.hosts) + 1):
            self.start_agent(index)
        return self

    def start_server(self) -> None:
        """``k3py server`` (and its own agent) in host 1; returns once the API answers."""
        host = self.server_host
        argv = k3py_argv(
            "server",
            "--data-dir", str(self.root / "h1"),
            "--https-listen-port", str(API_PORT),
            "--advertise-address", host.address,
            "--tls-san", host.address,
            "--write-kubeconfig", str(self.kubeconfig),
            "--node-name", self.nodes[0],
            "--node-ip", host.address,
            "--flannel-backend", self.backend,
            *self.server_args,
        )  # fmt: skip
        self.server = host.popen(argv, self.log("server"))
        wait_until(self.kubeconfig.exists, 60, "the server's kubeconfig")
        wait_until(
            lambda: self.kubectl("get", "--raw", "/readyz", check=False).returncode == 0,
            60,
            "the API server",
        )

    def stop_server(self) -> None:
        """Stop the server (its own agent stops with it; containers keep running)."""
        if self.server is not None:
            stop(self.server)
            self.server_host.processes.remove(self.server)
            self.server = None

    def _token_file(self) -> Path:
        return self.root / "h1" / "server" / "token"

    def start_agent(self, index: int) -> None:
        host = self.host(index)
        argv = k3py_argv(
            "agent",
            "--server", f"https://{self.server_host.address}:{API_PORT}",
            "--token-file", str(self._token_file()),
            "--data-dir", str(self.root / host.name),
            "--node-name", self.nodes[index - 1],
            "--node-ip", host.address,
            "--flannel-backend", self.backend,
            *self.agent_args,
        )  # fmt: skip
        self.agents[index] = host.popen(argv, self.log(host.name))

    def stop_agent(self, index: int) -> None:
        process = self.agents.pop(index, None)
        if process is not None:
            stop(process)
            self.host(index).processes.remove(process)

    def restart_agent(self, index: int) -> None:
        self.stop_agent(index)
        self.start_agent(index)

    def stop(self) -> None:
        for index in list(self.agents):
            self.stop_agent(index)
        self.stop_server()
        for node in self.nodes:
            remove_node_containers(node)

    def __enter__(self) -> NetnsCluster:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- kubectl -----------------------------------------------------------------------------

    def kubectl(
        self, *args: str, stdin: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return self.server_host.run(
            "env", f"KUBECONFIG={self.kubeconfig}", f"HOME={self.root}", KUBECTL, *args,
            check=check, timeout=timeout, input=stdin,
        )  # fmt: skip

    def kubectl_json(self, *args: str) -> Any:
        return json.loads(self.kubectl(*args, "-o", "json").stdout)

    def apply(self, manifest: dict[str, Any]) -> None:
        self.kubectl("apply", "-f", "-", stdin=json.dumps(manifest))

    def node(self, name: str) -> dict[str, Any] | None:
        result = self.kubectl("get", "node", name, "-o", "json", check=False)
        return json.loads(result.stdout) if result.returncode == 0 else None

    def node_ready(self, name: str) -> bool:
        node = self.node(name)
        if node is None or not (node.get("spec") or {}).get("podCIDR"):
            return False
        conditions = (node.get("status") or {}).get("conditions") or []
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    def wait_ready(self, timeout: float = 90) -> None:
        for name in self.nodes:
            wait_until(lambda n=name: self.node_ready(n), timeout, f"node {name} Ready")  # type: ignore[misc]

    # -- pods --------------------------------------------------------------------------------

    def run_pod(self, name: str, node: str, command: list[str], namespace: str = "default") -> None:
        self.apply(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "namespace": namespace, "labels": {"test": name}},
                "spec": {
                    "nodeName": node,
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{"name": "main", "image": TEST_IMAGE, "command": command}],
                },
            }
        )

    def pod(self, name: str, namespace: str = "default") -> dict[str, Any] | None:
        result = self.kubectl("get", "pod", name, "-n", namespace, "-o", "json", check=False)
        return json.loads(result.stdout) if result.returncode == 0 else None

    def pod_ip(self, name: str, timeout: float = 60) -> str:
        def running() -> str | None:
            pod = self.pod(name)
            status = (pod or {}).get("status") or {}
            if status.get("phase") == "Running" and status.get("podIP"):
                return str(status["podIP"])
            return None

        return wait_until(running, timeout, f"pod {name} Running with an IP")

    def container_id(self, pod: str, namespace: str = "default") -> str:
        ids = docker(
            "ps", "-q",
            "--filter", f"label=io.kubernetes.pod.name={pod}",
            "--filter", f"label=io.kubernetes.pod.namespace={namespace}",
            "--filter", "label=io.k3py.container.kind=app",
        ).split()  # fmt: skip
        ids = [i for i in ids if self._ours(i)]
        assert ids, f"no running container for pod {pod}"
        return ids[0]

    def _ours(self, container: str) -> bool:
        node = docker("inspect", "-f", '{{index .Config.Labels "io.k3py.node"}}', container)
        return node.strip() in self.nodes

    def exec(
        self, pod: str, *command: str, check: bool = True, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["docker", "exec", self.container_id(pod), *command],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{' '.join(command)} in pod {pod} failed ({result.returncode}): {result.stderr}"
            )
        return result

    def fetch(self, pod: str, address: str, port: int = 80, timeout: int = 5) -> str:
        """An HTTP GET from inside ``pod`` (busybox's static wget crashes; nc does TCP)."""
        request = f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w {timeout} {address} {port}"
        result = self.exec(pod, "sh", "-c", request, check=False, timeout=timeout + 10)
        return result.stdout
