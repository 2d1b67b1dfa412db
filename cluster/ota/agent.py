"""The agent's side of an UpdatePlan: take a firmware bundle when the plan says so, report.

When the controller sets this node's entry of a plan to ``Downloading``, the updater applies
the plan's firmware bundle (:func:`k3py.cluster.ota.apply.apply_firmware`), reporting each
phase in the entry; a refusal sets ``Failed`` with its reason and nothing changes. After an
install it reports ``Rebooting`` and asks the launcher (``restart``: ``SIGHUP`` to it) to start
the new version. At start, an entry left in ``Installing`` or ``Rebooting`` becomes
``Healthy`` when this agent runs the plan's version, or ``RolledBack`` with the launcher's
reason when it does not. Runs only under the launcher (it is what makes an update safe).
Entries are written by read-modify-write of the status, retried on conflicts.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from k3py.cluster.api.resources import by_kind
from k3py.cluster.api.status import ApiError
from k3py.cluster.client import KubeClient
from k3py.cluster.client.clock import RealClock
from k3py.cluster.client.events import timestamp
from k3py.cluster.ota.apply import apply_firmware
from k3py.cluster.ota.bundle import BundleError, Running
from k3py.cluster.ota.firmware import Firmware
from k3py.cluster.ota.rollout import DOWNLOADING, FAILED, HEALTHY, REBOOTING, ROLLED_BACK

logger = logging.getLogger("k3py.agent.ota")
UPDATE_PLANS = by_kind("ota.k3py.io/v1", "UpdatePlan")
POLL_SECONDS = 2.0
Object = dict[str, Any]


class Updater:
    def __init__(
        self,
        client: KubeClient,
        session: aiohttp.ClientSession,
        node: str,
        firmware: Firmware,
        running: Running,
        *,
        key_path: Path,
        restart: Callable[[], None],
    ) -> None:
        self.client, self.session, self.node = client, session, node
        self.firmware, self.running, self.key_path = firmware, running, key_path
        self.restart = restart
        self.clock = RealClock()

    def _entry(self, plan: Object) -> Object | None:
        for entry in (plan.get("status") or {}).get("nodes") or []:
            if isinstance(entry, dict) and entry.get("name") == self.node:
                return dict(entry)
        return None

    async def _set(self, name: str, phase: str, message: str = "") -> None:
        assert UPDATE_PLANS is not None
        for _ in range(10):
            plan = await self.client.get(UPDATE_PLANS, name)
            status = plan.setdefault("status", {})
            entries = [e for e in status.get("nodes") or []
                       if isinstance(e, dict) and e.get("name") != self.node]  # fmt: skip
            entry = {"name": self.node, "phase": phase,
                     "lastTransitionTime": timestamp(self.clock)}  # fmt: skip
            if message:
                entry["message"] = message
            status["nodes"] = sorted([*entries, entry], key=lambda e: str(e.get("name")))
            try:
                await self.client.update(UPDATE_PLANS, plan, subresource="status")
                return
            except ApiError as err:
                if err.code != 409:
                    raise
        raise RuntimeError(f"cannot report {phase} in UpdatePlan {name}: conflicts")

    async def report_startup(self) -> None:
        """Close what a previous run left open: Healthy, or RolledBack with the reason."""
        assert UPDATE_PLANS is not None
        note_path = self.firmware.root / "rolled-back.json"
        note = json.loads(note_path.read_text()) if note_path.exists() else None
        plans, _ = await self.client.list(UPDATE_PLANS)
        for plan in plans:
            entry = self._entry(plan)
            if entry is None or entry.get("phase") not in ("Installing", REBOOTING):
                continue
            name = plan["metadata"]["name"]
            if str((plan.get("spec") or {}).get("version")) == self.running.version:
                await self._set(name, HEALTHY)
            else:
                reason = note["reason"] if note else "the new version did not start"
                await self._set(name, ROLLED_BACK, f"rolled back: {reason}")
        note_path.unlink(missing_ok=True)

    async def once(self) -> bool:
        """Act on a plan that asks this node to start; whether an install happened."""
        assert UPDATE_PLANS is not None
        plans, _ = await self.client.list(UPDATE_PLANS)
        for plan in plans:
            entry = self._entry(plan)
            if entry is None or entry.get("phase") != DOWNLOADING:
                continue
            name, spec = plan["metadata"]["name"], plan.get("spec") or {}
            if spec.get("kind", "firmware") != "firmware":
                await self._set(name, FAILED, "system bundles are not supported on this node yet")
                continue
            url = f"/ota/v1/bundles/firmware-{spec.get('version')}.k3pyb"
            work = self.firmware.root / "downloads"

            async def report(phase: str, plan_name: str = name) -> None:
                if phase != DOWNLOADING:  # the controller already wrote Downloading
                    await self._set(plan_name, phase)

            try:
                await apply_firmware(self.session, url, work, self.firmware, self.running,
                                     key_path=self.key_path, report=report)  # fmt: skip
            except BundleError as err:
                await self._set(name, FAILED, str(err))
                continue
            except Exception as err:  # a download cut: the next round resumes it
                logger.warning("update download failed; retrying", exc_info=err)
                continue
            await self._set(name, REBOOTING, "restarting into the new firmware")
            self.restart()
            return True
        return False

    async def run(self) -> None:
        await self.report_startup()
        while True:
            try:
                if await self.once():
                    return
            except (ApiError, aiohttp.ClientError, OSError) as err:
                logger.warning("update check failed", exc_info=err)
            await asyncio.sleep(POLL_SECONDS)


LAUNCHER_PID = "K3PY_LAUNCHER_PID"
KEY_OVERRIDE = "K3PY_OTA_KEY"  # tests point agents at their key (boards use the image's)


def start_under_launcher(
    client: KubeClient, server_url: str, ssl_context: Any, node: str, version: str
) -> asyncio.Task[None] | None:
    """The updater task of an agent the launcher started (None otherwise: no safe restart)."""
    import os
    import signal

    from k3py.cluster.ota.apply import running_system
    from k3py.cluster.ota.bundle import IMAGE_KEY_PATH
    from k3py.cluster.ota.firmware import DEFAULT_DIR

    launcher = os.environ.get(LAUNCHER_PID, "")
    if not launcher.isdigit():
        return None
    root = Path(os.environ.get("K3PY_FIRMWARE_DIR", str(DEFAULT_DIR)))
    connector = aiohttp.TCPConnector(ssl=ssl_context or False, limit=2)
    session = aiohttp.ClientSession(server_url, connector=connector)
    updater = Updater(
        client, session, node, Firmware(root), running_system(version),
        key_path=Path(os.environ.get(KEY_OVERRIDE, str(IMAGE_KEY_PATH))),
        restart=lambda: os.kill(int(launcher), signal.SIGHUP),
    )  # fmt: skip

    async def run() -> None:
        try:
            await updater.run()
        finally:
            await session.close()

    return asyncio.create_task(run(), name="ota-updater")
