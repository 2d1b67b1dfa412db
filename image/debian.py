"""Debian's archive as a package feed: signed indices, dependency resolution, a download cache.

The build needs no emulation and no apt: it reads the suite's ``InRelease`` (checked with
``gpgv`` against Debian's archive keyring), the ``Packages`` index of each component for the
board's architecture (checked against the SHA-256 sums ``InRelease`` lists), resolves a closure of
``Depends``/``Pre-Depends`` for the wanted packages, and downloads each ``.deb`` once into a cache
(verified by SHA-256). Indices are cached as well, so a second build touches no network unless
asked to refresh; a package lock (exact versions, file names and sums) replays a resolution.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import lzma
import os
import re
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from k3py.image.errors import ImageError

logger = logging.getLogger("k3py.image.debian")

DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEFAULT_SUITE = "trixie"
DEFAULT_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
# Cached indices older than this are fetched again: the archive drops superseded .debs from
# its pool after point releases, so an old index eventually names files that are gone.
INDEX_MAX_AGE_SECONDS = 7 * 24 * 3600
_RELATION = re.compile(r"^\s*([a-z0-9][a-z0-9+.-]*)(?::[a-z0-9-]+)?\s*(?:\(([<>=]+)\s*([^)]+)\))?")


@dataclass(frozen=True)
class Package:
    """One binary package as the index describes it."""

    name: str
    version: str
    architecture: str
    filename: str
    size: int
    sha256: str
    source: str
    installed_size_kib: int
    depends: str = ""
    pre_depends: str = ""
    provides: str = ""

    @property
    def deb_name(self) -> str:
        return self.filename.rsplit("/", 1)[-1]

    def lock_entry(self) -> dict[str, str | int]:
        return {
            "name": self.name,
            "version": self.version,
            "architecture": self.architecture,
            "filename": self.filename,
            "size": self.size,
            "sha256": self.sha256,
            "source": self.source,
            "installed_size_kib": self.installed_size_kib,
        }

    @classmethod
    def from_lock(cls, entry: Mapping[str, object]) -> Package:
        return cls(
            name=str(entry["name"]),
            version=str(entry["version"]),
            architecture=str(entry["architecture"]),
            filename=str(entry["filename"]),
            size=int(str(entry["size"])),
            sha256=str(entry["sha256"]),
            source=str(entry.get("source", entry["name"])),
            installed_size_kib=int(str(entry.get("installed_size_kib", 0))),
        )


def parse_relations(field: str) -> list[list[tuple[str, str | None, str | None]]]:
    """``a (>= 1) | b, c:any`` → ``[[("a", ">=", "1"), ("b", None, None)], [("c", …)]]``."""
    groups: list[list[tuple[str, str | None, str | None]]] = []
    for group in field.split(","):
        if not group.strip():
            continue
        alternatives = []
        for alternative in group.split("|"):
            match = _RELATION.match(alternative)
            if match:
                alternatives.append((match.group(1), match.group(2), match.group(3)))
        if alternatives:
            groups.append(alternatives)
    return groups


def parse_packages(text: str) -> Iterable[Package]:
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        key = ""
        for line in stanza.splitlines():
            if line[:1] in {" ", "\t"}:
                continue  # continuation lines belong to fields we do not read
            key, _, value = line.partition(":")
            fields[key] = value.strip()
        if "Package" not in fields or "Filename" not in fields:
            continue
        yield Package(
            name=fields["Package"],
            version=fields["Version"],
            architecture=fields.get("Architecture", ""),
            filename=fields["Filename"],
            size=int(fields.get("Size", "0")),
            sha256=fields.get("SHA256", ""),
            source=fields.get("Source", fields["Package"]).split(" ")[0],
            installed_size_kib=int(fields.get("Installed-Size", "0") or 0),
            depends=fields.get("Depends", ""),
            pre_depends=fields.get("Pre-Depends", ""),
            provides=fields.get("Provides", ""),
        )


class PackageIndex:
    """All packages of one architecture in one suite (its components merged)."""

    def __init__(self, architecture: str, packages: Iterable[Package]) -> None:
        self.architecture = architecture
        self.packages: dict[str, Package] = {}
        self.providers: dict[str, list[str]] = {}
        for package in packages:
            # One suite holds one version per name; keep the first if an index repeats it.
            self.packages.setdefault(package.name, package)
        for package in self.packages.values():
            for provided in parse_relations(package.provides):
                self.providers.setdefault(provided[0][0], []).append(package.name)

    def __getitem__(self, name: str) -> Package:
        try:
            return self.packages[name]
        except KeyError:
            raise ImageError(
                f"package {name!r} is not in Debian's {self.architecture} index "
                "(check the name, or refresh the index with --refresh-packages)"
            ) from None

    def resolve(
        self,
        wanted: Iterable[str],
        *,
        exclude: Iterable[str] = (),
        follow: Callable[[str], bool] | None = None,
    ) -> list[Package]:
        """The dependency closure of ``wanted``, sorted by name.

        ``exclude`` names packages an appliance leaves out even where something depends on them
        (their dependants' maintainer scripts never run here). ``follow`` limits which
        dependencies are followed at all (the kernel needs its image package, not its hooks).
        Alternatives choose something already chosen, else the first real package, else the
        first provider of a virtual one.
        """
        excluded = set(exclude)
        chosen: dict[str, Package] = {}
        provided: set[str] = set()
        queue = [self[name] for name in wanted]
        while queue:
            package = queue.pop(0)
            if package.name in chosen:
                continue
            chosen[package.name] = package
            provided.update(alt[0][0] for alt in parse_relations(package.provides))
            relations = parse_relations(package.pre_depends) + parse_relations(package.depends)
            for alternatives in relations:
                names = [a[0] for a in alternatives]
                if follow is not None:
                    names = [n for n in names if follow(n)]
                    if not names:
                        continue
                if any(n in chosen or n in provided or n in excluded for n in names):
                    continue
                pick = next((n for n in names if n in self.packages), None)
                if pick is None:
                    pick = next(
                        (sorted(self.providers[n])[0] for n in names if n in self.providers),
                        None,
                    )
                if pick is None:
                    raise ImageError(
                        f"{package.name} depends on {' | '.join(names)}, which no package in "
                        f"Debian's {self.architecture} index provides"
                    )
                if pick not in excluded:
                    queue.append(self.packages[pick])
        return sorted(chosen.values(), key=lambda p: p.name)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class DebianArchive:
    """Debian's archive behind a local cache: indices and ``.deb`` files, both verified."""

    def __init__(
        self,
        cache_dir: Path,
        *,
        mirror: str = DEFAULT_MIRROR,
        suite: str = DEFAULT_SUITE,
        components: tuple[str, ...] = ("main", "non-free-firmware"),
        keyring: Path = DEFAULT_KEYRING,
        refresh: bool = False,
    ) -> None:
        self.cache_dir = cache_dir
        self.mirror = mirror.rstrip("/")
        self.suite = suite
        self.components = components
        self.keyring = keyring
        self.refresh = refresh
        self.downloaded_bytes = 0
        self._release_sums: dict[str, str] | None = None

    @property
    def _index_dir(self) -> Path:
        return self.cache_dir / "dists" / self.suite

    def _download(self, url: str, target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, partial = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as answer:  # noqa: S310
                while block := answer.read(1 << 20):
                    out.write(block)
                    self.downloaded_bytes += len(block)
            os.replace(partial, target)  # atomic: builds sharing the cache never see half a file
        except urllib.error.HTTPError as err:
            raise ImageError(
                f"cannot download {url}: {err} (the archive no longer has it? rebuild with "
                "--refresh-packages to read the current package indices)"
            ) from None
        except (urllib.error.URLError, OSError) as err:
            raise ImageError(
                f"cannot download {url}: {err} (is {self.mirror} reachable? "
                "a build with a warm cache needs no network)"
            ) from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(partial)

    def _release(self) -> dict[str, str]:
        """SHA-256 sums of the suite's index files, from a signature-checked ``InRelease``."""
        if self._release_sums is not None:
            return self._release_sums
        path = self._index_dir / "InRelease"
        stale = path.exists() and time.time() - path.stat().st_mtime > INDEX_MAX_AGE_SECONDS
        if self.refresh or stale or not path.exists():
            self.refresh = True  # the component indices must match the new InRelease
            self._download(f"{self.mirror}/dists/{self.suite}/InRelease", path)
        check = subprocess.run(
            ["gpgv", "--keyring", str(self.keyring), str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
        if check.returncode != 0:
            path.unlink(missing_ok=True)
            raise ImageError(
                f"the signature of {self.mirror}/dists/{self.suite}/InRelease does not verify "
                f"with {self.keyring}: {check.stderr.strip()} (install debian-archive-keyring)"
            )
        sums: dict[str, str] = {}
        section = ""
        for line in path.read_text().splitlines():
            if not line.startswith(" "):
                section = line.rstrip(":")
                continue
            if section == "SHA256":
                digest, _size, name = line.split()
                sums[name] = digest
        self._release_sums = sums
        return sums

    def index(self, architecture: str) -> PackageIndex:
        """The suite's packages for one architecture (downloaded once, then cached)."""
        sums = self._release()
        packages: list[Package] = []
        for component in self.components:
            name = f"{component}/binary-{architecture}/Packages.xz"
            if name not in sums:
                raise ImageError(f"Debian {self.suite} has no {name} (unknown architecture?)")
            path = self._index_dir / name
            if self.refresh or not path.exists() or _sha256(path) != sums[name]:
                # by-hash: a mirror mid-update never serves an index that mismatches InRelease
                by_hash = f"{component}/binary-{architecture}/by-hash/SHA256/{sums[name]}"
                self._download(f"{self.mirror}/dists/{self.suite}/{by_hash}", path)
                if _sha256(path) != sums[name]:
                    path.unlink()
                    raise ImageError(f"{name} does not match InRelease; retry the build")
            packages.extend(parse_packages(lzma.decompress(path.read_bytes()).decode()))
        return PackageIndex(architecture, packages)

    def deb_path(self, package: Package) -> Path:
        return self.cache_dir / "debs" / package.deb_name

    def fetch(self, packages: Iterable[Package]) -> dict[str, Path]:
        """Each package's ``.deb`` in the cache, downloading (in parallel) what is missing."""
        wanted = list(packages)
        missing = [p for p in wanted if not self.deb_path(p).exists()]

        def get(package: Package) -> None:
            path = self.deb_path(package)
            self._download(f"{self.mirror}/{package.filename}", path)
            if _sha256(path) != package.sha256:
                path.unlink()
                raise ImageError(
                    f"{package.deb_name} does not match the index's SHA-256; retry the build"
                )

        if missing:
            logger.info(
                "downloading packages",
                extra={"fields": {"count": len(missing), "cache": str(self.cache_dir)}},
            )
            with ThreadPoolExecutor(max_workers=6) as pool:
                list(pool.map(get, missing))
        return {p.name: self.deb_path(p) for p in wanted}


def write_lock(path: Path, groups: Mapping[str, Iterable[Package]], suite: str) -> None:
    """The exact packages of a build (per tree), to replay it with ``--lock``."""
    import json

    lock = {
        "suite": suite,
        "groups": {g: [p.lock_entry() for p in packages] for g, packages in sorted(groups.items())},
    }
    path.write_text(json.dumps(lock, indent=1, sort_keys=True) + "\n")


def read_lock(path: Path) -> dict[str, list[Package]]:
    import json

    try:
        lock = json.loads(path.read_text())
        return {
            group: [Package.from_lock(entry) for entry in entries]
            for group, entries in lock["groups"].items()
        }
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ImageError(f"cannot read the package lock {path}: {err}") from None
