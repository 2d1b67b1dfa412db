"""System bundles on a board: the A/B boot state U-Boot's script shares, the inactive slot
written from a real server (only the blocks the board lacks), checked, and booted on trial.

Slots are files here and the boot partition a directory; the QEMU tier runs the same code on
the boards' real partitions under U-Boot (qemu-tests/test_ota_system.py)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from k3py.cluster.ota import bootenv, bundle
from k3py.cluster.ota.bootenv import BootEnv, State
from k3py.cluster.ota.system import SystemSlots, apply_system, settle_boot
from k3py.image.ota import bundler
from tests.ota.test_distribution import _session
from tests.server.conftest import Api

BOARD = bundle.Running("0.1.0", "arm64", "qemu-virt-arm64")
URL = "/ota/v1/bundles/system-0.2.0.k3pyb"


def _env(tmp_path: Path) -> BootEnv:
    boot = tmp_path / "boot"
    boot.mkdir(exist_ok=True)
    for name, blob in bootenv.initial_files().items():
        (boot / name).write_bytes(blob)
    return BootEnv(boot, remount=False)


def test_the_boot_state_survives_a_torn_copy() -> None:
    blob = bootenv.encode({"BOOT_ORDER": "B A", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "2"})
    assert len(blob) == bootenv.ENV_SIZE
    assert bootenv.decode(blob) == {"BOOT_ORDER": "B A", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "2"}
    torn = blob[:100] + b"\xff" * (len(blob) - 100)
    assert bootenv.decode(torn) is None
    assert bootenv.decode(b"") is None


def test_switch_and_mark_good_follow_rauc(tmp_path: Path) -> None:
    env = _env(tmp_path)
    assert env.read() == State(("a", "b"), {"a": 3, "b": 3})
    env.switch_to("b")
    assert env.read() == State(("b", "a"), {"a": 3, "b": 3}, "b")
    assert env.read().primary() == "b"
    # A power cut tore the first copy while the next write was under way: the second holds.
    first = env.mount / "k3pyenv.0"
    first.write_bytes(first.read_bytes()[:50])
    assert env.read() == State(("b", "a"), {"a": 3, "b": 3}, "b")
    for name in bootenv.ENV_FILES:
        (env.mount / name).write_bytes(b"")
    assert env.read() == State.initial()  # both gone: what the script assumes too
    env.write(State(("b", "a"), {"a": 3, "b": 1}, "b"))
    assert env.mark_good("b")
    assert env.read() == State(("b", "a"), {"a": 3, "b": 3})
    assert not env.mark_good("b")
    # U-Boot writes counters with setexpr (hexadecimal); both agree below ten.
    assert State.from_variables({"BOOT_ORDER": "B A", "BOOT_B_LEFT": "0"}).primary() == "a"


async def test_settle_boot_marks_a_trial_good_only_once_ready(tmp_path: Path) -> None:
    env = _env(tmp_path)
    env.switch_to("b")
    env.write(State(("b", "a"), {"a": 3, "b": 2}, "b"))  # U-Boot counted this boot
    slots = SystemSlots(env, "b", lambda s: tmp_path / s, lambda d, label: None)
    answers = iter([False, False, True])

    async def ready() -> bool:
        return next(answers)

    assert await settle_boot(slots, ready, poll=0) is None
    assert env.read() == State(("b", "a"), {"a": 3, "b": 3})
    # The trial of B failed three times and U-Boot booted A: A first again, the reason told.
    env.write(State(("b", "a"), {"a": 2, "b": 0}, "b"))
    back = SystemSlots(env, "a", lambda s: tmp_path / s, lambda d, label: None)
    reason = await settle_boot(back, ready, poll=0)
    assert "slot B did not become Ready" in str(reason)
    assert env.read() == State(("a", "b"), {"a": 3, "b": 0})


@pytest.fixture
def pushed(tmp_path: Path) -> tuple[Path, Path, bytes]:
    """A system bundle, its public key and the slot it carries."""
    from tests.ota.test_bundle import _image

    bundler.keygen(tmp_path / "k.pem", tmp_path / "k.pub")
    out = tmp_path / "system.k3pyb"
    image = _image(tmp_path)
    bundler.system_bundle(out, bundler.load_private_key(tmp_path / "k.pem"), image,
                          minimum_version=None)  # fmt: skip
    slot = image.read_bytes()[1048576:][: 20 * 65536 + 4]
    return out, tmp_path / "k.pub", slot


async def test_a_board_writes_its_inactive_slot_and_boots_it_on_trial(
    api: Api, pushed: tuple[Path, Path, bytes], tmp_path: Path
) -> None:
    path, key, new = pushed
    assert (await api.put(URL, data=path.read_bytes())).status == 201
    running = bytearray(new)
    for number in (3, 7, 8):
        running[number * 65536] ^= 0xFF
    (tmp_path / "a").write_bytes(bytes(running))
    (tmp_path / "b").write_bytes(b"\x55" * len(new))  # an older system in slot B
    env = _env(tmp_path)
    labels: list[tuple[Path, str]] = []
    slots = SystemSlots(env, "a", lambda s: tmp_path / s, lambda d, lb: labels.append((d, lb)))
    phases: list[str] = []

    async def report(phase: str) -> None:
        phases.append(phase)

    async with _session(api, "node1") as session:
        manifest, delta = await apply_system(session, URL, BOARD, slots, key_path=key,
                                             report=report)  # fmt: skip
    assert manifest.version == "0.2.0"
    assert (tmp_path / "b").read_bytes() == new
    assert delta.missing == (3, 7, 8)  # the only blocks downloaded
    assert phases == ["Installing", "Verifying"]
    assert labels == [(tmp_path / "b", "root-b")]
    assert env.read() == State(("b", "a"), {"a": 3, "b": 3}, "b")


async def test_a_foreign_or_downgrading_bundle_changes_nothing(
    api: Api, pushed: tuple[Path, Path, bytes], tmp_path: Path
) -> None:
    path, _, new = pushed
    assert (await api.put(URL, data=path.read_bytes())).status == 201
    (tmp_path / "other").mkdir()
    bundler.keygen(tmp_path / "other/k.pem", tmp_path / "other/k.pub")
    (tmp_path / "a").write_bytes(new)
    (tmp_path / "b").write_bytes(b"\x55" * len(new))
    env = _env(tmp_path)
    before = {n: (env.mount / n).read_bytes() for n in bootenv.ENV_FILES}
    slots = SystemSlots(env, "a", lambda s: tmp_path / s, lambda d, lb: None)

    async def report(phase: str) -> None:
        pass

    newer = bundle.Running("0.3.0", "arm64", "qemu-virt-arm64")
    async with _session(api, "node1") as session:
        with pytest.raises(bundle.BundleError, match="signed with another key"):
            await apply_system(session, URL, BOARD, slots, key_path=tmp_path / "other/k.pub",
                               report=report)  # fmt: skip
        with pytest.raises(bundle.BundleError, match="downgrade"):
            await apply_system(session, URL, newer, slots, key_path=pushed[1], report=report)
    assert (tmp_path / "b").read_bytes() == b"\x55" * len(new)
    assert {n: (env.mount / n).read_bytes() for n in bootenv.ENV_FILES} == before


TRIAL = Path(__file__).parents[2] / "image/overlay/usr/lib/k3py/trial"


def _trial(tmp_path: Path, cmdline: str, state: State) -> subprocess.Popen[str]:
    """The board's trial script with its boot state and command line in ``tmp_path``; its
    reboot leaves a file instead."""
    env = _env(tmp_path)
    env.write(state)
    (tmp_path / "cmdline").write_text(cmdline)
    variables = {"PATH": os.environ["PATH"], "K3PY_CMDLINE": str(tmp_path / "cmdline"),
                 "K3PY_BOOT": str(env.mount), "K3PY_TRIAL_POLL": "1", "K3PY_CONSOLE": "/dev/stderr",
                 "K3PY_REBOOT": f"touch {tmp_path / 'rebooted'}"}  # fmt: skip
    return subprocess.Popen(["sh", str(TRIAL)], env=variables, stderr=subprocess.PIPE, text=True)


def test_a_slot_on_trial_reboots_unless_marked_good_in_time(tmp_path: Path) -> None:
    on_trial = State(("b", "a"), {"a": 3, "b": 2}, "b")
    # k3py.trial=1 is raised to the floor of 10 s (a boot needs some time).
    trial = _trial(tmp_path, "console=ttyAMA0 root=LABEL=root-b k3py.slot=b k3py.trial=1\n",
                   on_trial)  # fmt: skip
    _, said = trial.communicate(timeout=30)
    assert (tmp_path / "rebooted").exists()
    assert "slot B is on trial: it must be marked good within 10s" in said
    assert "slot B was not marked good in time; rebooting" in said


def test_a_trial_ends_when_the_agent_marks_the_slot_good(tmp_path: Path) -> None:
    trial = _trial(
        tmp_path, "console=ttyAMA0 k3py.slot=b\n", State(("b", "a"), {"a": 3, "b": 2}, "b")
    )
    time.sleep(1.5)
    BootEnv(tmp_path / "boot", remount=False).mark_good("b")
    _, said = trial.communicate(timeout=10)
    assert trial.returncode == 0
    assert not (tmp_path / "rebooted").exists()
    assert "within 150s" in said  # the default deadline
    # Not on trial (the other slot is, or none): nothing to wait for.
    for state in (State(("a", "b"), {"a": 3, "b": 3}, "a"), State.initial()):
        case = tmp_path / f"trial-{state.trial or 'none'}"
        case.mkdir()
        trial = _trial(case, "k3py.slot=b\n", state)
        assert trial.communicate(timeout=10)[1] == ""
        assert trial.returncode == 0
    assert bootenv.running_slot(tmp_path / "missing") == "a"
