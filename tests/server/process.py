"""A ``k3py server`` subprocess on loopback for integration tests, and clients for it.

The server listens on a port the kernel picks (``--https-listen-port 0``); its kubeconfig
(written once it listens) tells the port. Clients: the real ``kubectl`` with that kubeconfig,
raw HTTPS requests with the admin client certificate, and the kubernetes Python client.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from k3py.cluster.server.pki import ClusterPKI
from tests.processes import server_argv, stop_process

KUBECTL = "/usr/bin/kubectl"


class ServerProcess:
    def __init__(self, root: Path, *extra_args: str) -> None:
        self.root = root
        self.data_dir = root / "data"
        self.kubeconfig = root / "kubeconfig.yaml"
        self.log_path = root / "server.log"
        self.extra_args = extra_args
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""

    # Lifecycle ----------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> None:
        self.kubeconfig.unlink(missing_ok=True)
        argv = server_argv(self.data_dir, self.kubeconfig, 0, *self.extra_args)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while not self.kubeconfig.exists():
            if self.process.poll() is not None:
                raise RuntimeError(f"k3py server exited early:\n{self.log()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"k3py server did not write its kubeconfig:\n{self.log()}")
            time.sleep(0.05)
        config = yaml.safe_load(self.kubeconfig.read_text())
        self.url = config["clusters"][0]["cluster"]["server"]
        while self.request("GET", "/readyz")[0] != 200:
            if time.monotonic() > deadline:
                raise RuntimeError(f"k3py server did not become ready:\n{self.log()}")
            time.sleep(0.05)

    def stop(self) -> None:
        stop_process(self.process)

    def kill9(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # Clients ------------------------------------------------------------------------------

    def kubectl(
        self, *args: str, stdin: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "KUBECACHEDIR": str(self.root / "kube-cache"),
            "HOME": str(self.root),
        }
        result = subprocess.run(
            [KUBECTL, *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed ({result.returncode}):\n"
                f"{result.stdout}\n{result.stderr}"
            )
        return result

    def ssl_context(self, *, client_cert: bool = True) -> ssl.SSLContext:
        pki = ClusterPKI.in_dir(self.data_dir / "server" / "tls")
        if client_cert:
            return pki.client_ssl_context()
        return ssl.create_default_context(cafile=str(pki.ca_cert))

    def connection(
        self, *, client_cert: bool = True, timeout: float = 30
    ) -> http.client.HTTPSConnection:
        parts = urlsplit(self.url)
        return http.client.HTTPSConnection(
            parts.hostname or "127.0.0.1",
            parts.port,
            context=self.ssl_context(client_cert=client_cert),
            timeout=timeout,
        )

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        data: bytes | None = None,
        content_type: str = "application/json",
        client_cert: bool = True,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        """One HTTPS request as the admin (or anonymous); returns the status and parsed JSON."""
        conn = self.connection(client_cert=client_cert)
        try:
            payload = (
                data
                if data is not None
                else (json.dumps(body).encode() if body is not None else None)
            )
            all_headers = {"Content-Type": content_type, **(headers or {})}
            conn.request(method, path, body=payload, headers=all_headers)
            response = conn.getresponse()
            text = response.read().decode(errors="replace")
        except (ConnectionError, ssl.SSLError, OSError):
            if path == "/readyz":
                return 0, None
            raise
        finally:
            conn.close()
        try:
            return response.status, json.loads(text) if text else None
        except ValueError:
            return response.status, text

    def api_client(self) -> Any:
        """A kubernetes Python client ``ApiClient`` configured from the kubeconfig."""
        from kubernetes import client, config

        configuration = client.Configuration()
        config.load_kube_config(
            config_file=str(self.kubeconfig), client_configuration=configuration
        )
        return client.ApiClient(configuration)
