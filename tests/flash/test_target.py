"""Target safety: what a machine's sysfs and procfs say, and what flashing refuses."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from k3py.image.flash.errors import FlashError
from k3py.image.flash.target import HostSystem, TargetInfo, check_target

GIB = 1 << 30


class FakeMachine:
    """A sysfs/procfs/udev tree describing block devices, mounts and swap."""

    def __init__(self, root: Path) -> None:
        self.sys = root / "sys"
        self.proc = root / "proc"
        self.udev = root / "udev"
        for path in (self.sys / "class" / "block", self.sys / "dev" / "block", self.proc / "self"):
            path.mkdir(parents=True)
        self.udev.mkdir()
        self.mountinfo: list[str] = []
        self.swap_lines = ["Filename\tType\tSize\tUsed\tPriority"]
        self.flush()

    def _register(self, name: str, directory: Path, devno: str) -> None:
        (directory / "dev").write_text(devno + "\n")
        (self.sys / "class" / "block" / name).symlink_to(directory)
        (self.sys / "dev" / "block" / devno).symlink_to(directory)

    def disk(
        self,
        name: str,
        devno: str,
        size: int,
        *,
        parent: str = "devices/pci0000:00/0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0",
        removable: bool = False,
        read_only: bool = False,
        vendor: str = "",
        model: str = "",
        serial: str = "",
        partitions: int = 0,
    ) -> None:
        directory = self.sys / parent / "block" / name
        (directory / "device").mkdir(parents=True)
        (directory / "queue").mkdir()
        (directory / "holders").mkdir()
        (directory / "size").write_text(f"{size // 512}\n")
        (directory / "removable").write_text("1\n" if removable else "0\n")
        (directory / "ro").write_text("1\n" if read_only else "0\n")
        (directory / "queue" / "logical_block_size").write_text("512\n")
        if vendor:
            (directory / "device" / "vendor").write_text(vendor + "\n")
        if model:
            (directory / "device" / "model").write_text(model + "\n")
        self._register(name, directory, devno)
        major, minor = devno.split(":")
        if serial:
            (self.udev / f"b{devno}").write_text(f"E:ID_SERIAL_SHORT={serial}\n")
        for number in range(1, partitions + 1):
            part = directory / f"{name}{'p' if name[-1].isdigit() else ''}{number}"
            (part / "holders").mkdir(parents=True)
            (part / "partition").write_text(f"{number}\n")
            (part / "size").write_text(f"{size // 512 // (partitions + 1)}\n")
            (part / "ro").write_text("0\n")
            self._register(part.name, part, f"{major}:{int(minor) + number}")

    def holder(self, under: str, name: str, devno: str) -> None:
        """A device built on ``under`` (an LVM volume, a RAID array)."""
        directory = self.sys / "devices" / "virtual" / "block" / name
        (directory / "holders").mkdir(parents=True)
        (directory / "size").write_text("1000\n")
        self._register(name, directory, devno)
        (self.sys / "class" / "block" / under / "holders" / name).symlink_to(directory)

    def mount(self, devno: str, mountpoint: str, source: str) -> None:
        mountpoint = mountpoint.replace(" ", "\\040")
        self.mountinfo.append(
            f"{30 + len(self.mountinfo)} 1 {devno} / {mountpoint} rw - ext4 {source} rw"
        )
        self.flush()

    def swap(self, path: str) -> None:
        self.swap_lines.append(f"{path}\tpartition\t1048572\t0\t-2")
        self.flush()

    def flush(self) -> None:
        (self.proc / "self" / "mountinfo").write_text("\n".join(self.mountinfo) + "\n")
        (self.proc / "swaps").write_text("\n".join(self.swap_lines) + "\n")

    def system(self) -> HostSystem:
        return HostSystem(self.sys, self.proc, self.udev)

    def target(self, name: str) -> TargetInfo:
        return TargetInfo(Path(f"/dev/{name}"), self.system().describe(name))


USB = "devices/pci0000:00/0000:00:14.0/usb1/1-2/1-2:1.0/host6/target6:0:0/6:0:0:0"
MMC = "devices/platform/soc/fe340000.mmc/mmc_host/mmc0/mmc0:aaaa"


@pytest.fixture
def machine(tmp_path: Path) -> FakeMachine:
    fake = FakeMachine(tmp_path)
    fake.disk("sda", "8:0", 512 * GIB, vendor="ATA", model="Samsung SSD 870", partitions=2)
    fake.mount("8:2", "/", "/dev/sda2")
    fake.mount("8:1", "/boot/efi", "/dev/sda1")
    fake.disk(
        "sdb", "8:16", 32 * GIB, parent=USB, removable=True, vendor="SanDisk",
        model="Ultra Fit", serial="4C530001230", partitions=2,
    )  # fmt: skip
    fake.disk("mmcblk0", "179:0", 16 * GIB, parent=MMC, partitions=2)
    (fake.sys / MMC / "block" / "mmcblk0" / "device" / "name").write_text("SC16G\n")
    return fake


def test_usb_stick_is_described_and_accepted(machine: FakeMachine) -> None:
    target = machine.target("sdb")

    check_target(target, 2 * GIB, allow_file=False, force=False)

    assert target.device is not None
    assert target.device.transport == "usb"
    assert target.describe() == (
        "/dev/sdb: SanDisk Ultra Fit, 32.0 GiB, serial 4C530001230 (removable usb)"
    )


def test_mmc_card_is_accepted(machine: FakeMachine) -> None:
    target = machine.target("mmcblk0")

    check_target(target, 2 * GIB, allow_file=False, force=False)

    assert "SC16G, 16.0 GiB" in target.describe()


def test_system_disk_is_refused(machine: FakeMachine) -> None:
    with pytest.raises(FlashError) as refused:
        check_target(machine.target("sda"), 2 * GIB, allow_file=False, force=False)

    message = str(refused.value)
    assert "holds the running system (mounted at /, /boot/efi)" in message
    assert "fixed disk" in message
    assert "--force" in message


def test_root_on_a_volume_built_on_the_disk_is_found(machine: FakeMachine) -> None:
    machine.disk("sdc", "8:32", 64 * GIB, parent=USB, removable=True, partitions=1)
    machine.holder("sdc1", "dm-0", "254:0")
    machine.mount("254:0", "/", "/dev/mapper/vg-root")

    with pytest.raises(FlashError, match="running system"):
        check_target(machine.target("sdc"), GIB, allow_file=False, force=False)


def test_mounted_partition_is_refused_unless_forced(machine: FakeMachine) -> None:
    machine.mount("8:17", "/media/me/BOOT CARD", "/dev/sdb1")
    target = machine.target("sdb")

    with pytest.raises(FlashError) as refused:
        check_target(target, GIB, allow_file=False, force=False)
    check_target(target, GIB, allow_file=False, force=True)

    assert "mounted file systems (/dev/sdb1 on /media/me/BOOT CARD); unmount them" in str(
        refused.value
    )


def test_swap_partition_is_refused(machine: FakeMachine) -> None:
    machine.swap("/dev/sdb2")

    with pytest.raises(FlashError, match=r"in use as swap \(sdb2\)"):
        check_target(machine.target("sdb"), GIB, allow_file=False, force=False)


def test_partition_target_is_refused(machine: FakeMachine) -> None:
    with pytest.raises(FlashError, match="partition of /dev/sdb; flash the whole device"):
        check_target(machine.target("sdb1"), GIB, allow_file=False, force=False)


def test_fixed_disk_is_written_only_when_forced(machine: FakeMachine) -> None:
    machine.disk("sdd", "8:48", 128 * GIB, model="spare disk")
    target = machine.target("sdd")

    with pytest.raises(FlashError, match="fixed disk"):
        check_target(target, GIB, allow_file=False, force=False)
    check_target(target, GIB, allow_file=False, force=True)


def test_loop_device_is_accepted(machine: FakeMachine) -> None:
    machine.disk("loop3", "7:3", GIB, parent="devices/virtual")
    loop_dir = machine.sys / "devices" / "virtual" / "block" / "loop3" / "loop"
    loop_dir.mkdir()
    (loop_dir / "backing_file").write_text("/tmp/card.img\n")
    target = machine.target("loop3")

    check_target(target, GIB, allow_file=False, force=False)

    assert "loop device on /tmp/card.img" in target.describe()


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ({"read_only": True}, "write-protect"),
        ({"size": 0}, "no medium"),
        ({"size": GIB // 2}, "too small for the image: 512.0 MiB"),
    ],
)
def test_unfit_cards_are_refused_even_when_forced(
    machine: FakeMachine, setup: dict[str, object], message: str
) -> None:
    size = setup.get("size", 8 * GIB)
    assert isinstance(size, int)
    machine.disk(
        "sde", "8:64", size, parent=USB, removable=True, read_only=bool(setup.get("read_only"))
    )

    with pytest.raises(FlashError, match=message):
        check_target(machine.target("sde"), GIB, allow_file=False, force=True)


def test_files_need_allow_file(tmp_path: Path) -> None:
    existing = tmp_path / "card.img"
    existing.touch()
    system = HostSystem()

    with pytest.raises(FlashError, match="regular file, not a block device; pass --allow-file"):
        check_target(system.inspect(existing), GIB, allow_file=False, force=False)
    with pytest.raises(FlashError, match="does not exist"):
        check_target(system.inspect(tmp_path / "sdz"), GIB, allow_file=False, force=False)
    check_target(system.inspect(existing), GIB, allow_file=True, force=False)
    with pytest.raises(FlashError, match="is the image itself"):
        check_target(system.inspect(existing, image=existing), GIB, allow_file=True, force=False)


def test_this_machines_system_disk_is_refused() -> None:
    """The real sysfs and mountinfo: the disk holding / is never a flash target."""
    st_dev = os.stat("/").st_dev
    system = HostSystem()
    link = Path("/sys/dev/block") / f"{os.major(st_dev)}:{os.minor(st_dev)}"
    if not link.exists():
        pytest.skip("/ is not on a block device here (overlay or network root)")
    name = system.name_of(os.major(st_dev), os.minor(st_dev))
    disk = system.describe(name).partition_of or name

    with pytest.raises(FlashError, match="running system"):
        check_target(
            TargetInfo(Path(f"/dev/{disk}"), system.describe(disk)),
            512,
            allow_file=False,
            force=False,
        )
