"""The disk image: an MBR with a FAT boot partition, root slots A and B and a data partition.

Built from ordinary files with real tools and no loop devices or mounts: ``sfdisk`` lays out the
partition table from the board's template, ``mkfs.vfat`` + ``mcopy`` fill the boot partition,
``mke2fs -d`` builds the ext4 file systems from directories, and the pieces are copied into the
image at sfdisk's offsets, keeping zero blocks as holes. Disk id, volume id, UUIDs and hash seeds
are derived from the board and role, and times from ``SOURCE_DATE_EPOCH``, so a rebuild from the
same inputs is bit-identical. Root slot B stays empty (a hole) until an update writes it.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import jinja2

from k3py.image.errors import ImageError, command_failed

SECTOR = 512
MIB = 1 << 20
BOOT_LABEL = "K3PYBOOT"
ROOT_LABELS = ("root-a", "root-b")
DATA_LABEL = "data"


@dataclass(frozen=True)
class Partition:
    number: int
    name: str
    start: int  # bytes
    size: int  # bytes
    type: str


def run(argv: list[str], *, env: Mapping[str, str] | None = None, stdin: str | None = None) -> str:
    full_env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C", **(env or {})}
    result = subprocess.run(
        argv, input=stdin, capture_output=True, text=True, env=full_env, check=False
    )
    if result.returncode != 0:
        raise command_failed(argv, result.returncode, result.stdout + result.stderr)
    return result.stdout


def stable_uuid(seed: str) -> str:
    """A UUID that depends only on ``seed`` (board, role, purpose): same inputs, same image."""
    return str(uuid.UUID(bytes=hashlib.sha256(seed.encode()).digest()[:16], version=4))


def stable_hex(seed: str, digits: int) -> str:
    return hashlib.sha256(seed.encode()).hexdigest()[:digits]


def tree_size(root: Path) -> int:
    """Bytes a tree needs in 4 KiB blocks, counting each hard-linked file once."""
    seen: set[int] = set()
    total = 0
    for directory, dirnames, filenames in os.walk(root):
        total += 4096 * (1 + len(dirnames) // 64)
        for name in filenames:
            stat = Path(directory, name).lstat()
            if stat.st_ino in seen:
                continue
            seen.add(stat.st_ino)
            total += max(4096, -(-stat.st_size // 4096) * 4096) if stat.st_size else 256
    return total


def layout(template: Path, image: Path, variables: Mapping[str, object]) -> list[Partition]:
    """Render the board's sfdisk template, write the table into ``image``, read it back."""
    script = jinja2.Template(template.read_text(), undefined=jinja2.StrictUndefined).render(
        **variables
    )
    run(["sfdisk", "--no-reread", "--no-tell-kernel", "-q", str(image)], stdin=script)
    table = json.loads(run(["sfdisk", "-J", str(image)]))["partitiontable"]
    names = ["boot", "rootA", "rootB", "data"]
    partitions = []
    for index, entry in enumerate(table["partitions"]):
        partitions.append(
            Partition(
                number=index + 1,
                name=names[index] if index < len(names) else f"p{index + 1}",
                start=int(entry["start"]) * SECTOR,
                size=int(entry["size"]) * SECTOR,
                type=str(entry["type"]),
            )
        )
    if len(partitions) != 4:
        raise ImageError(f"{template}: expected 4 partitions (boot, rootA, rootB, data)")
    return partitions


def make_fat(target: Path, size: int, files: Path, volume_id: str, epoch: int) -> None:
    """A FAT32 boot partition holding ``files`` (flat: no directories, so no directory times)."""
    target.unlink(missing_ok=True)
    run(["mkfs.vfat", "-F", "32", "-s", "1", "-n", BOOT_LABEL, "-i", volume_id, "--invariant",
         "-C", str(target), str(size // 1024)])  # fmt: skip
    names = sorted(p.name for p in files.iterdir())
    for name in names:
        if (files / name).is_dir():
            raise ImageError(f"boot partition entries must be files; {name} is a directory")
        os.utime(files / name, (epoch, epoch))
    env = {"MTOOLS_SKIP_CHECK": "1", "SOURCE_DATE_EPOCH": str(epoch), "TZ": "UTC"}
    if names:
        run(["mcopy", "-i", str(target), "-m", *[str(files / n) for n in names], "::/"], env=env)


def make_ext4(
    target: Path, size: int, tree: Path, label: str, seed: str, epoch: int, journal: bool
) -> None:
    target.unlink(missing_ok=True)
    with target.open("wb") as file:
        file.truncate(size)
    fs_uuid = stable_uuid(f"{seed}/uuid")
    features = "^metadata_csum_seed" + ("" if journal else ",^has_journal")
    run(
        ["mke2fs", "-q", "-F", "-t", "ext4", "-b", "4096", "-m", "0", "-L", label, "-U", fs_uuid,
         "-O", features, "-E", f"hash_seed={stable_uuid(seed + '/hash')},root_owner=0:0",
         "-d", str(tree), str(target)],
        env={"E2FSPROGS_FAKE_TIME": str(epoch), "SOURCE_DATE_EPOCH": str(epoch)},
    )  # fmt: skip
    clamp_inode_times(target, tree, epoch)


def clamp_inode_times(target: Path, tree: Path, epoch: int) -> None:
    """Set every inode's ctime and atime to ``epoch``: ``mke2fs -d`` copies both from the source
    files, where no tool can set ctime and its own reading moves atime (relatime), so they would
    otherwise record when the build ran."""
    paths = ["/", "/lost+found"]
    for directory, dirnames, filenames in os.walk(tree):
        for name in sorted(dirnames + filenames):
            path = "/" + str(Path(directory, name).relative_to(tree))
            if '"' in path or "\n" in path:
                raise ImageError(f"cannot record the file name {path!r} in an ext4 image")
            paths.append(path)
    commands = [f'sif "{p}" {field} @{epoch}' for p in paths for field in ("ctime", "atime")]
    script = target.with_name(target.name + ".debugfs")
    script.write_text("\n".join(commands) + "\n")
    run(["debugfs", "-w", "-f", str(script), str(target)], env={"E2FSPROGS_FAKE_TIME": str(epoch)})
    script.unlink()


def write_sparse(image: Path, offset: int, source: Path) -> None:
    """Copy ``source`` into ``image`` at ``offset``, leaving all-zero blocks as holes."""
    block = MIB
    with source.open("rb") as src, image.open("r+b") as dst:
        position = offset
        while chunk := src.read(block):
            if chunk.count(0) != len(chunk):
                dst.seek(position)
                dst.write(chunk)
            position += len(chunk)


def round_up(value: int, unit: int) -> int:
    return -(-value // unit) * unit
