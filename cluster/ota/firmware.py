"""Firmware updates on the board: versions side by side on the data partition, one switch.

Layout under the firmware directory (``/var/lib/k3py/firmware`` on a board)::

    versions/<version>-<sha8>/site/k3py/…   one unpacked firmware per directory
    current  -> versions/…                  what the launcher starts
    previous -> versions/…                  what it falls back to
    trial.json                              present while ``current`` is on probation

:func:`install` unpacks a verified wheel into a hidden scratch directory, compiles its
bytecode, syncs it, and renames it into ``versions/`` (a version directory is whole or absent);
then it writes the trial file and switches ``current`` by renaming a new symlink over it. Each
step is atomic and the order makes every intermediate state bootable: a kill at any instant
leaves ``current`` naming a complete version (the old one, or the new one with its trial
file), which :mod:`k3py.cluster.ota.launcher` starts or rolls back. The image's own k3py (the
root slot's) stays the last resort when no version is installed. Boards do not carry
``k3py.image``, so the firmware members are picked here rather than by its installer. The
launcher imports this module at every boot and never installs: what only :meth:`install`
needs (compileall, zipfile, shutil, hashlib, pathlib) is imported there, and ``json`` only when
a trial file exists; the paths are strings handled with :mod:`os.path`. On an emulated ARM64
board ``pathlib`` alone took 0.44 s to import and ``json`` 0.3 s (``-X importtime``), more than
the rest of the launcher together. For the same reason :class:`Trial` is a plain class
(dataclasses imports inspect, a fifth of the launcher's imports on an emulated board).
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

from k3py.errors import K3pyError

if TYPE_CHECKING:
    from pathlib import Path

DEFAULT_DIR = "/var/lib/k3py/firmware"
HOST_ONLY = ("k3py/image/", "k3py/board/")  # the build host's packages, never on a board
MAX_ATTEMPTS = 3
TRIAL_SECONDS = 120.0


class FirmwareError(K3pyError):
    """A firmware cannot be installed or switched; nothing was changed."""


class Trial:
    """The version on probation: how often it was started, and until when it may take."""

    __slots__ = ("attempts", "deadline", "version")

    def __init__(self, version: str, attempts: int, deadline: float) -> None:
        self.version = version  # the directory under versions/ on probation
        self.attempts = attempts
        self.deadline = deadline  # wall-clock seconds by which the new version must report Ready

    def __repr__(self) -> str:
        return f"Trial({self.version!r}, attempts={self.attempts}, deadline={self.deadline})"


def _fsync_dir(path: str | os.PathLike[str]) -> None:
    descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _scratch_beside(path: str) -> str:
    directory, name = os.path.split(path)
    return os.path.join(directory, f".{name}.{os.getpid()}")


def _write_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    path = os.fspath(path)
    scratch = _scratch_beside(path)
    with open(scratch, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(scratch, path)
    _fsync_dir(os.path.dirname(path))


def unlink_if_present(path: str) -> bool:
    """Remove ``path``; False if it was not there (contextlib's import would cost the
    launcher's start more than this function)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


def _link_atomic(link: str, target: str) -> None:
    scratch = _scratch_beside(link)
    unlink_if_present(scratch)
    os.symlink(target, scratch)
    os.replace(scratch, link)
    _fsync_dir(os.path.dirname(link))


def _compile(site: Path) -> None:
    """Bytecode for the board's Python, made while the old version still runs: the new one
    then starts without compiling its imports, which on a board's CPU would add seconds to
    the restart. Synced like the sources, since a torn ``.pyc`` fails its import."""
    import compileall

    compileall.compile_dir(str(site), quiet=2, workers=1)
    for cache in site.rglob("__pycache__"):
        for pyc in cache.iterdir():
            with pyc.open("rb") as file:
                os.fsync(file.fileno())
        _fsync_dir(cache)
        _fsync_dir(cache.parent)


class Firmware:
    """The firmware directory of one board (its paths as strings)."""

    def __init__(
        self, root: str | os.PathLike[str] = DEFAULT_DIR, *, compile_bytecode: bool = True
    ) -> None:
        self.root = os.fspath(root)
        self.compile_bytecode = compile_bytecode
        self.versions = os.path.join(self.root, "versions")
        self.current = os.path.join(self.root, "current")
        self.previous = os.path.join(self.root, "previous")
        self.trial_file = os.path.join(self.root, "trial.json")

    def site(self, link: str | None = None) -> str | None:
        """The site directory ``current`` (or ``link``) names, when it is whole."""
        target = os.path.realpath(link or self.current)
        site = os.path.join(target, "site")
        whole = os.path.exists(os.path.join(target, "COMPLETE")) and os.path.isdir(site)
        return site if whole else None

    def current_name(self) -> str | None:
        if not os.path.islink(self.current):
            return None
        return os.path.basename(os.path.realpath(self.current))

    def version_of(self, link: str | os.PathLike[str]) -> str | None:
        try:
            with open(os.path.join(os.path.realpath(link), "COMPLETE")) as marker:
                return marker.read().strip()
        except FileNotFoundError:
            return None

    def trial(self) -> Trial | None:
        try:
            with open(self.trial_file, "rb") as file:
                text = file.read()
        except FileNotFoundError:
            return None
        import json  # only while a version is on trial

        try:
            data = json.loads(text)
            return Trial(str(data["version"]), int(data["attempts"]), float(data["deadline"]))
        except (ValueError, KeyError, TypeError):
            return Trial("?", MAX_ATTEMPTS, 0.0)  # unreadable: treat as used up

    def write_trial(self, trial: Trial) -> None:
        import json

        data = {"version": trial.version, "attempts": trial.attempts, "deadline": trial.deadline}
        _write_atomic(self.trial_file, json.dumps(data).encode())

    def install(self, wheel: Path, version: str, trial_seconds: float = TRIAL_SECONDS) -> Path:
        """Unpack ``wheel`` (already verified) beside the running firmware and switch to it."""
        import hashlib
        import shutil
        from pathlib import Path

        versions = Path(self.versions)
        versions.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()[:8]
        name = f"{version}-{digest}"
        final = versions / name
        running = os.path.realpath(self.current) if os.path.exists(self.current) else None
        if running == os.path.realpath(final):
            raise FirmwareError(f"firmware {version} is already the running one")
        if not (final / "COMPLETE").exists():
            scratch = versions / f".{name}.{os.getpid()}"
            shutil.rmtree(scratch, ignore_errors=True)
            self._unpack(wheel, scratch / "site")
            if self.compile_bytecode:
                _compile(scratch / "site")
            _write_atomic(scratch / "COMPLETE", version.encode() + b"\n")
            shutil.rmtree(final, ignore_errors=True)  # a half-removed old copy, if any
            scratch.rename(final)
            _fsync_dir(versions)
        if os.path.islink(self.current) and self.site() is not None:
            _link_atomic(self.previous, os.readlink(self.current))
        # Before the switch: a kill between the two leaves a trial naming a version that is not
        # current, which the launcher discards.
        self.write_trial(Trial(name, 0, time.time() + trial_seconds))
        _link_atomic(self.current, f"versions/{name}")
        return final

    @staticmethod
    def _unpack(wheel: Path, site: Path) -> None:
        import zipfile

        try:
            with zipfile.ZipFile(wheel) as archive:
                for member in archive.infolist():
                    name = member.filename
                    if member.is_dir() or name.startswith(HOST_ONLY) or "/__pycache__/" in name:
                        continue
                    if not (name.startswith("k3py/") or ".dist-info/" in name):
                        continue
                    target = site / name
                    if site.resolve() not in target.resolve().parents:
                        raise FirmwareError(f"wheel member {name} escapes the firmware directory")
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with target.open("wb") as out:
                        out.write(archive.read(member))
                        out.flush()
                        os.fsync(out.fileno())
        except zipfile.BadZipFile as err:
            raise FirmwareError(f"{wheel.name} is not a wheel ({err})") from None
        for directory in sorted({p for p in site.rglob("*") if p.is_dir()} | {site}):
            _fsync_dir(directory)

    def mark_good(self) -> None:
        """The running firmware reported Ready: it stays (the trial ends)."""
        if unlink_if_present(self.trial_file):
            _fsync_dir(self.root)

    def roll_back(self) -> str | None:
        """Switch ``current`` back to ``previous`` (or to the image's own k3py when none)."""
        if os.path.islink(self.previous) and self.site(self.previous) is not None:
            _link_atomic(self.current, os.readlink(self.previous))
        else:
            unlink_if_present(self.current)
        self.mark_good()
        return self.version_of(self.current) if os.path.exists(self.current) else None
