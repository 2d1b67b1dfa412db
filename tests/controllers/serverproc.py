"""``k3py server`` as a subprocess on loopback, and the real kubectl against it, for async tests.

The server keeps its port and data directory across :meth:`ServerProcess.restart`, as a
rebooted board would; kubectl runs as an asyncio subprocess so that hollow nodes served from
the test's event loop keep working while it waits (``rollout status``, ``drain``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.processes import free_port, server_argv

KUBECTL = "/usr/bin/kubectl"


@dataclass
class Kubectl:
    returncode: int
    stdout: str
    stderr: str


class ServerProcess:
    def __init__(self, workdir: Path, *args: str) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.kubeconfig = workdir / "kubeconfig.yaml"
        self.log = workdir / "server.log"
        self.args = args
        self.process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    async def start(self) -> None:
        argv = server_argv(self.workdir / "data", self.kubeconfig, self.port, *self.args)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with self.log.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                *argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.workdir
            )
        await self._wait_ready()

    async def _wait_ready(self, seconds: float = 30.0) -> None:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.returncode is not None:
                raise AssertionError(f"k3py server exited:\n{self.log.read_text()[-3000:]}")
            with contextlib.suppress(OSError, asyncio.IncompleteReadError, ssl.SSLError):
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port, ssl=context)
                writer.write(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                answer = await reader.read(100)
                writer.close()
                if b" 200 " in answer and self.kubeconfig.exists():
                    return
            await asyncio.sleep(0.1)
        raise AssertionError(f"k3py server did not become ready:\n{self.log.read_text()[-3000:]}")

    async def stop(self, *, kill: bool = False) -> None:
        process = self.process
        self.process = None
        if process is None or process.returncode is not None:
            return
        process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()

    async def restart(self, *, kill: bool = False) -> None:
        await self.stop(kill=kill)
        await self.start()

    async def kubectl(self, *args: str, stdin: str | None = None, check: bool = True) -> Kubectl:
        proc = await asyncio.create_subprocess_exec(
            KUBECTL, "--kubeconfig", str(self.kubeconfig), *args,
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        out, err = await proc.communicate(stdin.encode() if stdin is not None else None)
        result = Kubectl(proc.returncode or 0, out.decode(), err.decode())
        if check and result.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} exited {result.returncode}:\n{result.stderr}"
                f"\n{result.stdout}"
            )
        return result
