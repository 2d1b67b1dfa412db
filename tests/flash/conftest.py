"""Fixtures for the flash tests: test images, and loop devices that are always detached."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from k3py.cli import main

MIB = 1 << 20


@dataclass(frozen=True)
class LoopDevice:
    path: Path
    backing: Path


@dataclass(frozen=True)
class Outcome:
    code: int
    out: str
    err: str

    def error_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.startswith("k3py: ")]


def junk(size: int) -> bytes:
    """Stale data of a used card: a random MiB repeated."""
    block = os.urandom(MIB)
    return (block * (size // MIB + 1))[:size]


@pytest.fixture
def loop_device(tmp_path: Path) -> Iterator[Callable[..., LoopDevice]]:
    if os.geteuid() != 0:
        pytest.skip("loop devices need root")
    created: list[LoopDevice] = []

    def make(size: int, *, stale: bool = False) -> LoopDevice:
        backing = tmp_path / f"card{len(created)}.img"
        if stale:
            backing.write_bytes(junk(size))
        else:
            with backing.open("wb") as file:
                file.truncate(size)
        result = subprocess.run(
            ["losetup", "--find", "--show", str(backing)],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
        device = LoopDevice(Path(result.stdout.strip()), backing)
        created.append(device)
        return device

    yield make
    for device in created:
        subprocess.run(["losetup", "--detach", str(device.path)], check=False, timeout=30)


@pytest.fixture
def k3py_flash(capsys: pytest.CaptureFixture[str]) -> Callable[..., Outcome]:
    """Run ``k3py flash ARGS`` in this process and capture what it prints."""

    def run(*args: object) -> Outcome:
        capsys.readouterr()
        code = main(["flash", *(str(a) for a in args)])
        captured = capsys.readouterr()
        return Outcome(code, captured.out, captured.err)

    return run
