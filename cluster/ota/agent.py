"""The agent's side of an UpdatePlan: take a firmware bundle when the plan says so, report.

When the controller sets this node's entry of a plan to ``Downloading``, the updater applies
the plan's firmware bundle (:func:`k3py.cluster.ota.apply.apply_firmware`), reporting each
phase in the entry; a refusal sets ``Failed`` with its reason and nothing changes. After an
install it reports ``Rebooting`` and asks the launcher (``restart``: ``SIGHUP`` to it) to start
the new version. A system bundle (:mod:`k3py.cluster.ota.system`) is written into the inactive
root slot, the boot switches to it on trial, and the board reboots. At start, the boot is
settled first (a slot on trial is marked good once this node is Ready again), then an entry left
in ``Installing`` or ``Rebooting`` becomes ``Healthy`` when this agent runs the plan's version,
or ``RolledBack`` with the launcher's or the bootloader's reason when it does not. Firmware
bundles need the launcher, system bundles the A/B boot state (what makes each update safe).
A node writes only its own entry (a JSON patch testing the entry's name at its index), so the
nodes of a batch reporting at once do not conflict; a missing entry is added by
read-modify-write of the status, retried on conflicts.
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
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
from k3py.cluster.ota.rollout import (
    DOWNLOADING,
    FAILED,
    HEALTHY,
    INSTALLING,
    REBOOTING,
    ROLLED_BACK,
    VERIFYING,
)
from k3py.cluster.ota.system import SystemSlots, apply_system, settle_boot

logger = logging.getLogger("k3py.agent.ota")
UPDATE_PLANS = by_kind("ota.k3py.io/v1", "UpdatePlan")
NODES = by_kind("v1", "Node")
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
        restart: Callable[[], None] | None,
        slots: SystemSlots | None = None,
        reboot: Callable[[], None] | None = None,
        boot_id: str = "",
    ) -> None:
        self.client, self.session, self.node = client, session, node
        self.firmware, self.running, self.key_path = firmware, running, key_path
        self.restart, self.slots, self.reboot, self.boot_id = restart, slots, reboot, boot_id
        self.fallback: str | None = None  # why the bootloader left a slot on trial
        self.clock = RealClock()

    def _entry(self, plan: Object) -> Object | None:
        for entry in (plan.get("status") or {}).get("nodes") or []:
            if isinstance(entry, dict) and entry.get("name") == self.node:
                return dict(entry)
        return None

    async def _set(self, name: str, phase: str, message: str = "") -> None:
        assert UPDATE_PLANS is not None
        entry = {"name": self.node, "phase": phase, "lastTransitionTime": timestamp(self.clock)}
        if message:
            entry["message"] = message
        for _ in range(10):
            plan = await self.client.get(UPDATE_PLANS, name)
            status = plan.setdefault("status", {})
            listed = status.get("nodes") if isinstance(status.get("nodes"), list) else []
            index = next((i for i, e in enumerate(listed)
                          if isinstance(e, dict) and e.get("name") == self.node), None)  # fmt: skip
            try:
                if index is not None:
                    # Only this node's entry, checked in place: the other nodes' and the
                    # controller's writes since the read do not conflict with it, as they would
                    # with a whole status written back (ten nodes of a batch reporting at once).
                    path = f"/status/nodes/{index}"
                    patch = [{"op": "test", "path": f"{path}/name", "value": self.node},
                             {"op": "replace", "path": path, "value": entry}]  # fmt: skip
                    await self.client.patch(UPDATE_PLANS, name, patch, patch_type="json",
                                            subresource="status")  # fmt: skip
                    return
                # No entry yet (the controller writes them first): add it, guarded by the
                # resourceVersion of the read.
                others = [e for e in listed if isinstance(e, dict)]
                status["nodes"] = sorted([*others, entry], key=lambda e: str(e.get("name")))
                await self.client.update(UPDATE_PLANS, plan, subresource="status")
                return
            except ApiError as err:
                if err.code not in (409, 422):  # 422: the test failed, the list moved
                    raise
        raise RuntimeError(f"cannot report {phase} in UpdatePlan {name}: conflicts")

    async def report_startup(self) -> None:
        """Close what a previous run left open: Healthy, or RolledBack with the reason."""
        assert UPDATE_PLANS is not None
        note_path = Path(self.firmware.root) / "rolled-back.json"
        note = json.loads(note_path.read_text()) if note_path.exists() else None
        plans, _ = await self.client.list(UPDATE_PLANS)
        for plan in plans:
            entry = self._entry(plan)
            if entry is None or entry.get("phase") not in (INSTALLING, VERIFYING, REBOOTING):
                continue
            name = plan["metadata"]["name"]
            spec = plan.get("spec") or {}
            if str(spec.get("version")) == self.running.version:
                await self._set(name, HEALTHY)
            elif (spec.get("kind") == "system" and entry.get("phase") != REBOOTING
                  and self.fallback is None):  # fmt: skip
                # Cut during the write of the inactive slot (the boot never switched to it):
                # the running system is whole; the slot is written again.
                await self._set(name, DOWNLOADING, "the install was interrupted; starting again")
            else:
                reason = note["reason"] if note else "the new version did not start"
                if spec.get("kind") == "system":
                    reason = self.fallback or "the new slot did not boot"
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
            if spec.get("kind", "firmware") == "system":
                if await self._system(name, spec):
                    return True
                continue
            if self.restart is None:
                await self._set(name, FAILED, "firmware bundles need the firmware launcher")
                continue
            url = f"/ota/v1/bundles/firmware-{spec.get('version')}.k3pyb"
            work = Path(self.firmware.root) / "downloads"

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

    async def _system(self, name: str, spec: Object) -> bool:
        """Apply the plan's system bundle and reboot into it; whether the board reboots."""
        if self.slots is None or self.reboot is None:
            await self._set(name, FAILED, "this node has no A/B boot state for system bundles")
            return False
        url = f"/ota/v1/bundles/system-{spec.get('version')}.k3pyb"

        async def report(phase: str) -> None:
            await self._set(name, phase)

        try:
            await apply_system(self.session, url, self.running, self.slots,
                               key_path=self.key_path, report=report)  # fmt: skip
        except BundleError as err:
            await self._set(name, FAILED, str(err))
            return False
        except Exception as err:  # a download cut: the next round starts the slot again
            logger.warning("system update failed; retrying", exc_info=err)
            return False
        await self._set(name, REBOOTING, "rebooting into the new slot")
        self.reboot()
        return True

    async def node_ready(self) -> bool:
        """Whether the server has this node Ready, as reported during this boot."""
        assert NODES is not None
        try:
            node = await self.client.get(NODES, self.node)
        except (ApiError, aiohttp.ClientError, OSError):
            return False
        status = node.get("status") or {}
        if self.boot_id and (status.get("nodeInfo") or {}).get("bootID") != self.boot_id:
            return False
        return any(c.get("type") == "Ready" and c.get("status") == "True"
                   for c in status.get("conditions") or [] if isinstance(c, dict))  # fmt: skip

    async def run(self) -> None:
        if self.slots is not None:
            self.fallback = await settle_boot(self.slots, self.node_ready)
        await self.report_startup()
        while True:
            try:
                if await self.once():
                    return
            except (ApiError, aiohttp.ClientError, OSError) as err:
                logger.warning("update check failed", exc_info=err)
            await asyncio.sleep(POLL_SECONDS)


def _reboot() -> None:
    subprocess.run(["reboot"], check=False)  # busybox init: ends the services, syncs, resets


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


LAUNCHER_PID = "K3PY_LAUNCHER_PID"
KEY_OVERRIDE = "K3PY_OTA_KEY"  # tests point agents at their key (boards use the image's)


def start_under_launcher(
    client: KubeClient, server_url: str, ssl_context: Any, node: str, version: str
) -> asyncio.Task[None] | None:
    """The updater task of an agent the launcher started or of a board with A/B boot state
    (None otherwise: no update can be made safe)."""
    import os
    import signal

    from k3py.cluster.ota.apply import running_system
    from k3py.cluster.ota.bootenv import BootEnv
    from k3py.cluster.ota.bundle import IMAGE_KEY_PATH
    from k3py.cluster.ota.firmware import DEFAULT_DIR

    launcher = os.environ.get(LAUNCHER_PID, "")
    slots = SystemSlots.of_this_board() if BootEnv().available() else None
    if not launcher.isdigit() and slots is None:
        return None
    root = os.environ.get("K3PY_FIRMWARE_DIR", DEFAULT_DIR)
    connector = aiohttp.TCPConnector(ssl=ssl_context or False, limit=2)
    session = aiohttp.ClientSession(server_url, connector=connector)
    updater = Updater(
        client, session, node, Firmware(root), running_system(version),
        key_path=Path(os.environ.get(KEY_OVERRIDE, str(IMAGE_KEY_PATH))),
        restart=(lambda: os.kill(int(launcher), signal.SIGHUP)) if launcher.isdigit() else None,
        slots=slots, reboot=_reboot,
        boot_id=_boot_id(),
    )  # fmt: skip

    async def run() -> None:
        try:
            await updater.run()
        finally:
            await session.close()

    return asyncio.create_task(run(), name="ota-updater")
