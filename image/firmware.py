"""The firmware artefact: the k3py wheel, and the part of it a board runs.

An image carries k3py as it is shipped everywhere else (install scripts, OTA bundles): the wheel
built from the tree. :func:`firmware_wheel` finds that wheel for a build:

- a ``.whl`` file given by the user is taken as it is;
- a source tree (given, or the checkout this k3py's modules are loaded from, as with an
  editable install) is exported first: in a git checkout only its tracked files (so no
  untracked file of the working tree can reach an image), elsewhere every file but caches.
  The wheel is built from the export by pip and kept in the cache under the export's content
  hash, so an unchanged tree is built once;
- a k3py installed from a wheel file (``pip install dist/k3py-*.whl``) uses that wheel while it
  is still where pip found it, unchanged; otherwise (``pip install 'k3py[image]'``) its
  installed files are packed back into a wheel, each checked against its ``RECORD`` hash.

:func:`install` unpacks the firmware's members only (the CLI root, ``k3py.cluster``,
``k3py.kernel_config``): the image builder and the board data stay on the build host. It
writes the dist-info boards need (metadata, entry points, a ``RECORD`` of what was installed).
"""

from __future__ import annotations

import base64
import csv
import hashlib
import importlib.util
import io
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from k3py.image.errors import ImageError

logger = logging.getLogger("k3py.image.firmware")

# Wheel members a board runs besides the root's modules, by prefix; every other package under
# k3py/ (the image builder, the board data) is the build host's.
FIRMWARE_PACKAGES = ("k3py/cluster/", "k3py/kernel_config/")
DIST_INFO_KEPT = ("METADATA", "WHEEL", "entry_points.txt", "top_level.txt")
# Not part of a source tree's export when it is not a git checkout.
_UNSHIPPED_DIRS = {".git", ".venv", "build", "dist", "out", "cache", "__pycache__",
                   ".mypy_cache", ".pytest_cache", ".ruff_cache"}  # fmt: skip
_EPOCH = "1754697600"  # wheels built from the same export are byte-identical


@dataclass(frozen=True)
class Wheel:
    path: Path
    sha256: str
    source: str  # "given", "tree <path>", "installed wheel" or "installed files"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def is_firmware(member: str) -> bool:
    """Whether a wheel member (``k3py/…``) belongs on a board."""
    if not member.startswith("k3py/") or member.endswith("/"):
        return False
    if "/__pycache__/" in member or member.endswith(".pyc"):
        return False
    rest = member[len("k3py/") :]
    return "/" not in rest or member.startswith(FIRMWARE_PACKAGES)


def firmware_members(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        return sorted(n for n in archive.namelist() if is_firmware(n))


def _own_distribution() -> metadata.Distribution | None:
    """The installed distribution this running k3py was loaded from (a checkout on sys.path
    may hold another record of the name, such as setuptools' ``k3py.egg-info``)."""
    import k3py

    here = Path(k3py.__file__).resolve()
    for dist in metadata.distributions(name="k3py"):
        if Path(str(dist.locate_file("k3py/__init__.py"))).resolve() == here:
            return dist
    return None


def _installed_from() -> tuple[Path | None, dict[str, Any]]:
    """Where pip installed this k3py from (``direct_url.json``): a local path and its details."""
    dist = _own_distribution()
    text = dist.read_text("direct_url.json") if dist is not None else None
    info: dict[str, Any] = json.loads(text) if text else {}
    url = urlparse(str(info.get("url", "")))
    return (Path(unquote(url.path)) if url.scheme == "file" else None), info


def installed_tree() -> Path | None:
    """The source tree this k3py runs from: its modules are the tree's folders (an editable
    install, or the tree on ``sys.path``)."""
    spec = importlib.util.find_spec("k3py.cluster")  # located, not imported
    if spec is None or spec.origin is None:
        return None
    tree = Path(spec.origin).resolve().parent.parent
    return tree if (tree / "pyproject.toml").is_file() and (tree / "k3py").is_dir() else None


def installed_wheel() -> Path | None:
    """The wheel file this k3py was installed from, if it is still there unchanged."""
    path, info = _installed_from()
    if path is None or path.suffix != ".whl" or not path.is_file():
        return None
    recorded = str(info.get("archive_info", {}).get("hash", ""))
    if recorded.startswith("sha256=") and recorded[len("sha256=") :] != sha256_of(path):
        return None
    return path


def tree_files(tree: Path) -> list[str]:
    """The files of a source tree that make its wheel: tracked files in a git checkout."""
    if (tree / ".git").exists():
        result = subprocess.run(
            ["git", "-C", str(tree), "ls-files", "-z", "--cached"],
            capture_output=True, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise ImageError(f"cannot list the tracked files of {tree}: {result.stderr.decode()}")
        names = [n for n in result.stdout.decode().split("\0") if n]
        return sorted(n for n in names if (tree / n).is_file())
    found = []
    for directory, dirnames, filenames in os.walk(tree):
        dirnames[:] = [
            d for d in dirnames if d not in _UNSHIPPED_DIRS and not d.endswith(".egg-info")
        ]
        for name in filenames:
            if not name.endswith(".pyc"):
                found.append(str(Path(directory, name).relative_to(tree)))
    return sorted(found)


def untracked_sources(tree: Path) -> list[str]:
    """Files in a git checkout's package folders that git does not know: they are not part of
    the wheel (``git add`` puts them in)."""
    if not (tree / ".git").exists():
        return []
    folders = _package_folders(tree)
    argv = ["git", "-C", str(tree), "ls-files", "-z", "--others", "--exclude-standard"]
    result = subprocess.run([*argv, "--", *folders], capture_output=True, check=False)
    return sorted(n for n in result.stdout.decode().split("\0") if n)


def _package_folders(tree: Path) -> list[str]:
    import tomllib

    config = tomllib.loads((tree / "pyproject.toml").read_text())
    mapping: dict[str, str] = config.get("tool", {}).get("setuptools", {}).get("package-dir", {})
    return sorted(set(mapping.values())) or ["k3py"]


def _tree_key(tree: Path, files: list[str]) -> str:
    digest = hashlib.sha256()
    for name in files:
        path = tree / name
        digest.update(f"{name}\0{os.access(path, os.X_OK):d}\0{sha256_of(path)}\n".encode())
    return digest.hexdigest()[:32]


def export_tree(tree: Path, target: Path, files: list[str] | None = None) -> Path:
    """A copy of the files that make a source tree's distribution (:func:`tree_files`)."""
    for name in tree_files(tree) if files is None else files:
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(tree / name, target / name)
    return target


def build_wheel(tree: Path, cache_dir: Path) -> Path:
    """The wheel of a source tree's export, built once per content (cached)."""
    if not (tree / "pyproject.toml").is_file():
        raise ImageError(f"{tree} is not a k3py source tree (no pyproject.toml)")
    files = tree_files(tree)
    left_out = untracked_sources(tree)
    if left_out:
        logger.warning(
            "untracked files are not part of the firmware (git add them to include them): %s",
            " ".join(left_out),
        )
    slot = cache_dir / "firmware" / _tree_key(tree, files)
    built = sorted(slot.glob("k3py-*.whl"))
    if built:
        return built[0]
    with tempfile.TemporaryDirectory(prefix="k3py-firmware-") as scratch:
        export = export_tree(tree, Path(scratch, "src"), files)
        out = Path(scratch, "wheel")
        argv = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                "--wheel-dir", str(out), str(export)]  # fmt: skip
        env = {**os.environ, "SOURCE_DATE_EPOCH": _EPOCH, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
        result = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
        wheels = sorted(out.glob("k3py-*.whl"))
        if result.returncode != 0 or not wheels:
            tail = (result.stdout + result.stderr).strip().splitlines()[-15:]
            raise ImageError(f"building the k3py wheel from {tree} failed:\n  " + "\n  ".join(tail))
        slot.mkdir(parents=True, exist_ok=True)
        partial = slot / (wheels[0].name + ".partial")
        shutil.copyfile(wheels[0], partial)
        partial.rename(slot / wheels[0].name)
    return slot / wheels[0].name


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def pack_installed(cache_dir: Path) -> Path:
    """A wheel of the installed (non-editable) k3py, every file checked against ``RECORD``."""
    dist = _own_distribution()
    if dist is None:
        raise ImageError("this k3py has no installation record (RECORD): reinstall it with pip")
    entries: dict[str, bytes] = {}
    for file in dist.files or []:
        name = file.as_posix()
        if not name.startswith("k3py/") or "__pycache__" in name:
            continue
        data = Path(file.locate()).read_bytes()
        expected = file.hash.value if file.hash is not None and file.hash.mode == "sha256" else None
        if expected is not None and _record_hash(data) != f"sha256={expected}":
            raise ImageError(f"installed file {file.locate()} differs from its RECORD")
        entries[name] = data
    if not entries:
        raise ImageError("the installed k3py lists no files (reinstall it)")
    version = dist.version
    info = f"k3py-{version}.dist-info"
    for name in DIST_INFO_KEPT:
        text = dist.read_text(name)
        if text is not None:
            entries[f"{info}/{name}"] = text.encode()
    digest = hashlib.sha256(b"".join(n.encode() + d for n, d in sorted(entries.items())))
    slot = cache_dir / "firmware" / ("installed-" + digest.hexdigest()[:32])
    wheel = slot / f"k3py-{version}-py3-none-any.whl"
    if wheel.exists():
        return wheel
    slot.mkdir(parents=True, exist_ok=True)
    record = io.StringIO()
    writer = csv.writer(record, lineterminator="\n")
    partial = wheel.with_name(wheel.name + ".partial")
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in sorted(entries.items()):
            _add(archive, name, data)
            writer.writerow([name, _record_hash(data), len(data)])
        writer.writerow([f"{info}/RECORD", "", ""])
        _add(archive, f"{info}/RECORD", record.getvalue().encode())
    partial.rename(wheel)
    return wheel


def _add(archive: zipfile.ZipFile, name: str, data: bytes, mode: int = 0o644) -> None:
    entry = zipfile.ZipInfo(name, date_time=(2025, 8, 9, 0, 0, 0))
    entry.external_attr = (0o100000 | mode) << 16
    entry.compress_type = zipfile.ZIP_DEFLATED
    archive.writestr(entry, data)


def firmware_wheel(given: Path | None, cache_dir: Path) -> Wheel:
    """The wheel a build installs: given (a wheel or a source tree) or this k3py's own."""
    if given is not None and given.is_file():
        if given.suffix != ".whl":
            raise ImageError(f"--firmware {given}: expected a .whl file or a source tree")
        return Wheel(given, sha256_of(given), "given")
    tree = given if given is not None else installed_tree()
    if tree is not None:
        wheel = build_wheel(tree, cache_dir)
        return Wheel(wheel, sha256_of(wheel), f"tree {tree}")
    original = installed_wheel()
    if original is not None:
        return Wheel(original, sha256_of(original), "installed wheel")
    wheel = pack_installed(cache_dir)
    return Wheel(wheel, sha256_of(wheel), "installed files")


def install(site_packages: Path, wheel: Path) -> list[str]:
    """Unpack the firmware's members into ``site_packages``; returns the installed files."""
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        info = next((n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA")), None)
        if info is None:
            raise ImageError(f"{wheel} is not a wheel (no .dist-info/METADATA)")
        for directory in (site_packages / "k3py", site_packages / info):
            if directory.exists():
                shutil.rmtree(directory)
        installed: list[str] = []
        record = io.StringIO()
        writer = csv.writer(record, lineterminator="\n")
        wanted = [n for n in names if is_firmware(n)]
        wanted += [f"{info}/{n}" for n in DIST_INFO_KEPT if f"{info}/{n}" in names]
        for name in wanted:
            data = archive.read(name)
            if name == f"{info}/METADATA":  # the headers; the long description is the README
                data = data.split(b"\n\n", 1)[0] + b"\n"
            target = site_packages / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            mode = (archive.getinfo(name).external_attr >> 16) & 0o777
            target.chmod(0o755 if mode & 0o111 else 0o644)
            writer.writerow([name, _record_hash(data), len(data)])
            installed.append(name)
    (site_packages / info / "INSTALLER").write_text("k3py-image\n")
    writer.writerow([f"{info}/INSTALLER", "", ""])
    writer.writerow([f"{info}/RECORD", "", ""])
    (site_packages / info / "RECORD").write_text(record.getvalue())
    return sorted(installed)
