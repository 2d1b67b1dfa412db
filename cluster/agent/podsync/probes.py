"""Liveness, readiness and startup probes: how each is run, and each one's state machine.

A :class:`ProbeWorker` belongs to one container instance and one probe kind. It waits
``initialDelaySeconds``, then probes every ``periodSeconds`` with ``timeoutSeconds``; the result
flips to success after ``successThreshold`` consecutive successes and to failure after
``failureThreshold`` consecutive failures. Before the first probe a readiness result is
failure, a liveness result success and a startup result unknown, as in the kubelet; liveness
and readiness probes wait until the startup probe has succeeded. A worker reports each change
through ``on_change``; the pod worker restarts containers whose liveness or startup probe
failed. Probes run as exec (in the container), httpGet or tcpSocket (to the pod's IP).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from k3py.cluster.agent.runtime import ContainerRuntime
from k3py.cluster.client.clock import Clock
from k3py.shutdown import cancel_and_wait

logger = logging.getLogger("k3py.agent.probes")

ProbeKind = Literal["liveness", "readiness", "startup"]
PROBE_FIELDS: dict[ProbeKind, str] = {
    "startup": "startupProbe",
    "liveness": "livenessProbe",
    "readiness": "readinessProbe",
}


@dataclass(frozen=True)
class ProbeOutcome:
    success: bool
    message: str = ""


ProbeRunner = Callable[[Mapping[str, Any], str, str], Awaitable[ProbeOutcome]]


def _port(value: Any, container: Mapping[str, Any]) -> int:
    if isinstance(value, int):
        return value
    text = str(value)
    if text.isdigit():
        return int(text)
    for port in container.get("ports") or []:
        if port.get("name") == text:
            return int(port["containerPort"])
    raise ValueError(f"port {text!r} is not a named port of the container")


class Prober:
    """Runs one probe against a container (exec) or the pod's IP (httpGet, tcpSocket)."""

    def __init__(self, runtime: ContainerRuntime) -> None:
        self._runtime = runtime

    async def run(
        self,
        probe: Mapping[str, Any],
        container: Mapping[str, Any],
        container_id: str,
        pod_ip: str,
    ) -> ProbeOutcome:
        timeout = float(probe.get("timeoutSeconds") or 1)
        try:
            if "exec" in probe:
                command = [str(c) for c in (probe["exec"] or {}).get("command") or []]
                result = await self._runtime.exec_sync(container_id, command, timeout)
                if result.exit_code == 0:
                    return ProbeOutcome(True)
                output = result.output.decode(errors="replace").strip()
                return ProbeOutcome(
                    False, output or f"command {command} exited with {result.exit_code}"
                )
            if "httpGet" in probe:
                return await self._http(probe["httpGet"] or {}, container, pod_ip, timeout)
            if "tcpSocket" in probe:
                source = probe["tcpSocket"] or {}
                host = str(source.get("host") or pod_ip)
                port = _port(source.get("port"), container)
                async with asyncio.timeout(timeout):
                    _, writer = await asyncio.open_connection(host, port)
                writer.close()
                return ProbeOutcome(True)
        except TimeoutError:
            return ProbeOutcome(False, f"timeout after {timeout:g}s")
        except (OSError, ValueError) as err:
            return ProbeOutcome(False, str(err))
        except Exception as err:  # a probe must never take its worker down
            return ProbeOutcome(False, f"{type(err).__name__}: {err}")
        return ProbeOutcome(False, "probe has no exec, httpGet or tcpSocket handler")

    async def _http(
        self,
        source: Mapping[str, Any],
        container: Mapping[str, Any],
        pod_ip: str,
        time_limit: float,
    ) -> ProbeOutcome:
        import aiohttp

        scheme = str(source.get("scheme") or "HTTP").lower()
        host = str(source.get("host") or pod_ip)
        port = _port(source.get("port"), container)
        path = str(source.get("path") or "/")
        if not path.startswith("/"):
            path = "/" + path
        headers = {"User-Agent": "kube-probe/1.32"}
        for header in source.get("httpHeaders") or []:
            headers[str(header.get("name"))] = str(header.get("value", ""))
        url = f"{scheme}://{host}:{port}{path}"
        client_timeout = aiohttp.ClientTimeout(total=time_limit)
        connector = aiohttp.TCPConnector(ssl=False, force_close=True)
        async with (
            aiohttp.ClientSession(timeout=client_timeout, connector=connector) as session,
            session.get(url, headers=headers, allow_redirects=False) as response,
        ):
            if 200 <= response.status < 400:
                return ProbeOutcome(True)
            return ProbeOutcome(False, f"HTTP probe failed with statuscode: {response.status}")


class ProbeWorker:
    """One probe of one container instance, on the clock."""

    def __init__(
        self,
        kind: ProbeKind,
        probe: Mapping[str, Any],
        run: Callable[[], Awaitable[ProbeOutcome]],
        clock: Clock,
        on_change: Callable[[ProbeWorker], None],
        gate: Callable[[], bool] = lambda: True,
    ) -> None:
        self.kind = kind
        self.probe = probe
        self._run = run
        self._clock = clock
        self._on_change = on_change
        self._gate = gate
        self.result: bool | None = {"readiness": False, "liveness": True, "startup": None}[kind]
        self.message = ""
        self.successes = 0
        self.failures = 0
        self._task: asyncio.Task[None] | None = None

    @property
    def period(self) -> float:
        return float(self.probe.get("periodSeconds") or 10)

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=f"probe-{self.kind}")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)

    def _record(self, outcome: ProbeOutcome) -> bool:
        """Count one outcome; True when the result changed."""
        success_threshold = int(self.probe.get("successThreshold") or 1)
        failure_threshold = int(self.probe.get("failureThreshold") or 3)
        if outcome.success:
            self.successes += 1
            self.failures = 0
            if self.successes >= success_threshold and self.result is not True:
                self.result = True
                self.message = ""
                return True
        else:
            self.failures += 1
            self.successes = 0
            self.message = outcome.message
            if self.failures >= failure_threshold and self.result is not False:
                self.result = False
                return True
        return False

    async def _loop(self) -> None:
        await self._clock.sleep(float(self.probe.get("initialDelaySeconds") or 0))
        while True:
            if self._gate():
                outcome = await self._run()
                if self._record(outcome):
                    self._on_change(self)
                if self.kind == "startup" and self.result is True:
                    return  # a startup probe stops once it succeeded
                if self.kind in {"liveness", "startup"} and self.result is False:
                    return  # the container is about to be restarted
            await self._clock.sleep(self.period)


class PodProbes:
    """The probe workers of one pod: one per running container instance and probe kind."""

    def __init__(
        self, prober: Prober, clock: Clock, on_change: Callable[[ProbeWorker], None]
    ) -> None:
        self._prober = prober
        self._clock = clock
        self._on_change = on_change
        self._workers: dict[tuple[str, str], tuple[str, ProbeWorker]] = {}

    def result(self, name: str, kind: str, container_id: str) -> bool | None:
        entry = self._workers.get((name, kind))
        if entry is None or entry[0] != container_id:
            return None
        return entry[1].result

    def failed(self, name: str, container_id: str) -> tuple[str, str] | None:
        """(kind, message) of a failed startup or liveness probe: the container must go."""
        for kind in ("startup", "liveness"):
            entry = self._workers.get((name, kind))
            if entry is not None and entry[0] == container_id and entry[1].result is False:
                return kind, entry[1].message
        return None

    async def sync(self, running: list[tuple[Mapping[str, Any], str]], pod_ip: str) -> None:
        """Probe exactly these (container spec, container id) pairs."""
        wanted: set[tuple[str, str]] = set()
        for container, container_id in running:
            name = str(container["name"])
            for kind, field in PROBE_FIELDS.items():
                probe = container.get(field)
                if not probe:
                    continue
                key = (name, kind)
                wanted.add(key)
                current = self._workers.get(key)
                if current is not None and current[0] == container_id:
                    continue
                if current is not None:
                    await current[1].stop()
                worker = self._worker(kind, probe, container, container_id, pod_ip)
                self._workers[key] = (container_id, worker)
                worker.start()
        await self.stop(keep=wanted)

    async def stop(self, keep: set[tuple[str, str]] | None = None) -> None:
        for key in [k for k in self._workers if keep is None or k not in keep]:
            _, worker = self._workers.pop(key)
            await worker.stop()

    def _worker(
        self,
        kind: ProbeKind,
        probe: Mapping[str, Any],
        container: Mapping[str, Any],
        container_id: str,
        pod_ip: str,
    ) -> ProbeWorker:
        name = str(container["name"])

        def started() -> bool:
            entry = self._workers.get((name, "startup"))
            return entry is None or entry[0] != container_id or entry[1].result is True

        async def run() -> ProbeOutcome:
            return await self._prober.run(probe, container, container_id, pod_ip)

        gate = started if kind != "startup" else (lambda: True)
        return ProbeWorker(kind, probe, run, self._clock, self._on_change, gate)
