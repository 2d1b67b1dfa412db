"""Debian's archive as a package feed: signed indices, dependency resolution, a download cache.

The build needs no emulation and no apt: it reads the ``InRelease`` of the release and of its
``-updates`` and ``-security`` suites (checked with ``gpgv`` against Debian's archive keyring), the
``Packages`` index of each component for the board's architecture (checked against the SHA-256
sums ``InRelease`` lists), takes each package's newest version across the suites, resolves a
closure of ``Depends``/``Pre-Depends`` (versions, ``Provides``, ``Conflicts`` and ``Breaks``
honoured; a test compares it with apt's answer), and downloads each ``.deb`` once into a cache
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

from debian.debian_support import version_compare

from k3py.image.errors import ImageError

logger = logging.getLogger("k3py.image.debian")

DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEFAULT_SECURITY_MIRROR = "http://deb.debian.org/debian-security"
DEFAULT_SUITE = "trixie"
# Suites without point and security updates of their own.
_ROLLING = {"sid", "unstable", "experimental"}
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
    conflicts: str = ""
    breaks: str = ""
    suite: str = ""  # the suite whose index listed it (trixie, trixie-updates, trixie-security)

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
            "suite": self.suite,
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
            suite=str(entry.get("suite", "")),
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


def parse_packages(text: str, suite: str = "") -> Iterable[Package]:
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
            conflicts=fields.get("Conflicts", ""),
            breaks=fields.get("Breaks", ""),
            suite=suite,
        )


Relation = tuple[str, str | None, str | None]  # name, operator, version
_OPERATORS: dict[str, Callable[[int], bool]] = {
    "<<": lambda c: c < 0, "<=": lambda c: c <= 0, "=": lambda c: c == 0,
    ">=": lambda c: c >= 0, ">>": lambda c: c > 0,
    "<": lambda c: c <= 0, ">": lambda c: c >= 0,  # obsolete spellings of <= and >=
}  # fmt: skip


def satisfies(version: str, operator: str | None, wanted: str | None) -> bool:
    """Whether ``version`` meets ``(operator wanted)``, compared as dpkg compares versions."""
    if operator is None or wanted is None:
        return True
    check = _OPERATORS.get(operator)
    if check is None:
        raise ImageError(f"unknown version relation {operator!r} in a package index")
    return check(version_compare(version, wanted))


def _shown(relation: Relation) -> str:
    name, operator, version = relation
    return f"{name} ({operator} {version})" if operator else name


def _provided(package: Package) -> list[tuple[str, str | None]]:
    """What a package provides: each name, with its version when it provides one (``= v``)."""
    return [
        (name, version if operator == "=" else None)
        for name, operator, version in (group[0] for group in parse_relations(package.provides))
    ]


def _meets(package: Package, relation: Relation) -> bool:
    """Whether a package meets a relation by its own name and version or by what it provides
    (a versioned relation only through a versioned Provides, as in dpkg)."""
    name, operator, version = relation
    if package.name == name and satisfies(package.version, operator, version):
        return True
    for provided, provided_version in _provided(package):
        if provided != name:
            continue
        if operator is None:
            return True
        if provided_version is not None and satisfies(provided_version, operator, version):
            return True
    return False


class PackageIndex:
    """The candidate of every package name for one architecture: its newest version across the
    suites given (a release, its point updates and its security updates), as apt's default
    policy chooses when every suite has the same priority."""

    def __init__(self, architecture: str, packages: Iterable[Package]) -> None:
        self.architecture = architecture
        self.packages: dict[str, Package] = {}
        self.providers: dict[str, list[str]] = {}
        for package in packages:
            current = self.packages.get(package.name)
            if current is None or version_compare(package.version, current.version) > 0:
                self.packages[package.name] = package
        for package in self.packages.values():
            for name, _ in _provided(package):
                self.providers.setdefault(name, []).append(package.name)
        for names in self.providers.values():
            names.sort()

    def __getitem__(self, name: str) -> Package:
        try:
            return self.packages[name]
        except KeyError:
            raise ImageError(
                f"package {name!r} is not in Debian's {self.architecture} index "
                "(check the name, or refresh the index with --refresh-packages)"
            ) from None

    def candidates(self, relation: Relation) -> list[Package]:
        """Packages that meet a relation: the real package first, then providers by name."""
        name = relation[0]
        found = [self.packages[name]] if name in self.packages else []
        found += [self.packages[p] for p in self.providers.get(name, ()) if p != name]
        return [p for p in found if _meets(p, relation)]

    def resolve(
        self,
        wanted: Iterable[str],
        *,
        exclude: Iterable[str] = (),
        follow: Callable[[str], bool] | None = None,
    ) -> list[Package]:
        """The dependency closure of ``wanted``, sorted by name.

        Versioned ``Depends``/``Pre-Depends`` must be met by a candidate (or a versioned
        Provides); ``Conflicts`` and ``Breaks`` rule out a choice that clashes with one already
        made. Alternatives choose something already chosen, else the first alternative whose
        candidate fits, else the first fitting provider of a virtual package (apt's order).
        ``exclude`` names packages an appliance leaves out even where something depends on them
        (their dependants' maintainer scripts never run here). ``follow`` limits which
        dependencies are followed at all (the kernel needs its image package, not its hooks).
        """
        return _Resolution(self, set(exclude), follow).run(wanted)


class _Resolution:
    """One resolution's state: what is chosen, what it provides and what it rules out."""

    def __init__(
        self, index: PackageIndex, excluded: set[str], follow: Callable[[str], bool] | None
    ) -> None:
        self.index, self.excluded, self.follow = index, excluded, follow
        self.chosen: dict[str, Package] = {}
        self.satisfying: dict[str, list[Package]] = {}  # name → chosen packages that are it
        # name → (chosen package, "conflicts with" or "breaks", relation)
        self.ruled_out: dict[str, list[tuple[Package, str, Relation]]] = {}

    def clash(self, package: Package) -> str | None:
        """Why ``package`` cannot join the chosen set (a Conflicts or Breaks), or None."""
        for field, relations in (("conflicts with", package.conflicts),
                                 ("breaks", package.breaks)):  # fmt: skip
            for group in parse_relations(relations):
                for relation in group:
                    for other in self.satisfying.get(relation[0], ()):
                        if other.name != package.name and _meets(other, relation):
                            return f"{package.name} {package.version} {field} {_shown(relation)}"
        names = [package.name, *(n for n, _ in _provided(package))]
        for name in names:
            for owner, field, relation in self.ruled_out.get(name, ()):
                if owner.name != package.name and _meets(package, relation):
                    return f"{owner.name} {owner.version} {field} {_shown(relation)}"
        return None

    def choose(self, package: Package) -> None:
        self.chosen[package.name] = package
        for name in [package.name, *(n for n, _ in _provided(package))]:
            self.satisfying.setdefault(name, []).append(package)
        for field, relations in (("conflicts with", package.conflicts),
                                 ("breaks", package.breaks)):  # fmt: skip
            for group in parse_relations(relations):
                for relation in group:
                    self.ruled_out.setdefault(relation[0], []).append((package, field, relation))

    def run(self, wanted: Iterable[str]) -> list[Package]:
        queue: list[Package] = []
        for name in wanted:
            package = self.index[name]
            if package.name in self.chosen:
                continue
            if (why := self.clash(package)) is not None:
                raise ImageError(f"the wanted packages cannot be installed together: {why}")
            self.choose(package)
            queue.append(package)
        while queue:
            package = queue.pop(0)
            relations = parse_relations(package.pre_depends) + parse_relations(package.depends)
            for group in relations:
                pick = self.pick(package, group)
                if pick is not None:
                    self.choose(pick)
                    queue.append(pick)
        return sorted(self.chosen.values(), key=lambda p: p.name)

    def pick(self, package: Package, group: list[Relation]) -> Package | None:
        """What meets one dependency group of ``package``; None when it is already met."""
        if self.follow is not None:
            group = [r for r in group if self.follow(r[0])]
            if not group:
                return None
        for relation in group:
            if relation[0] in self.excluded:
                return None
            if any(_meets(p, relation) for p in self.satisfying.get(relation[0], ())):
                return None
        clashes: list[str] = []
        for relation in group:
            for candidate in self.index.candidates(relation):
                if candidate.name in self.excluded:
                    return None
                why = self.clash(candidate)
                if why is None:
                    return candidate
                clashes.append(why)
        wanted = " | ".join(_shown(r) for r in group)
        if clashes:
            raise ImageError(
                f"{package.name} depends on {wanted}, but {'; '.join(clashes)} "
                f"(Debian's {self.index.architecture} index)"
            )
        available = [
            f"{r[0]} {self.index.packages[r[0]].version} ({self.index.packages[r[0]].suite})"
            for r in group
            if r[0] in self.index.packages
        ]
        has = f" (the index has {', '.join(available)})" if available else ""
        raise ImageError(
            f"{package.name} depends on {wanted}, which no package in Debian's "
            f"{self.index.architecture} index provides{has}"
        )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def update_suites(suite: str) -> tuple[str, ...]:
    """A release and the suites that carry its fixes: point updates and security updates."""
    return (suite,) if suite in _ROLLING else (suite, f"{suite}-updates", f"{suite}-security")


class DebianArchive:
    """Debian's archive behind a local cache: indices and ``.deb`` files, both verified.

    A build reads the release's suite together with its ``-updates`` and ``-security`` suites
    (the latter from the security archive), so an image built today carries today's fixes.
    """

    def __init__(
        self,
        cache_dir: Path,
        *,
        mirror: str = DEFAULT_MIRROR,
        suite: str = DEFAULT_SUITE,
        security_mirror: str = DEFAULT_SECURITY_MIRROR,
        components: tuple[str, ...] = ("main", "non-free-firmware"),
        keyring: Path = DEFAULT_KEYRING,
        refresh: bool = False,
    ) -> None:
        self.cache_dir = cache_dir
        self.mirror = mirror.rstrip("/")
        self.security_mirror = security_mirror.rstrip("/")
        self.suite = suite
        self.suites = update_suites(suite)
        self.components = components
        self.keyring = keyring
        self.refresh = refresh
        self.downloaded_bytes = 0
        self._release_sums: dict[str, dict[str, str]] = {}
        self._refreshed: set[str] = set()

    def mirror_of(self, suite: str) -> str:
        """The archive serving a suite: the security archive for ``*-security``."""
        return self.security_mirror if suite.endswith("-security") else self.mirror

    def index_dir(self, suite: str) -> Path:
        """The cached suite, laid out as on the mirror (``dists/<suite>/…``)."""
        return self.cache_dir / "dists" / suite

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

    def _release(self, suite: str) -> dict[str, str]:
        """SHA-256 sums of a suite's index files, from a signature-checked ``InRelease``."""
        if suite in self._release_sums:
            return self._release_sums[suite]
        path = self.index_dir(suite) / "InRelease"
        url = f"{self.mirror_of(suite)}/dists/{suite}/InRelease"
        stale = path.exists() and time.time() - path.stat().st_mtime > INDEX_MAX_AGE_SECONDS
        if self.refresh or stale or not path.exists():
            self._refreshed.add(suite)  # the component indices must match the new InRelease
            self._download(url, path)
        check = subprocess.run(
            ["gpgv", "--keyring", str(self.keyring), str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
        if check.returncode != 0:
            path.unlink(missing_ok=True)
            raise ImageError(
                f"the signature of {url} does not verify with {self.keyring}: "
                f"{check.stderr.strip()} (install debian-archive-keyring)"
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
        self._release_sums[suite] = sums
        return sums

    def index_files(self, architecture: str) -> list[tuple[str, Path]]:
        """Each suite's verified ``Packages.xz`` for one architecture (downloaded once)."""
        files: list[tuple[str, Path]] = []
        for suite in self.suites:
            sums = self._release(suite)
            for component in self.components:
                name = f"{component}/binary-{architecture}/Packages.xz"
                if name not in sums:
                    if suite == self.suite:
                        raise ImageError(f"Debian {suite} has no {name} (unknown architecture?)")
                    continue  # an update suite without that component has no updates for it
                path = self.index_dir(suite) / name
                fresh = suite in self._refreshed or self.refresh
                if fresh or not path.exists() or _sha256(path) != sums[name]:
                    # by-hash: a mirror mid-update never serves an index that mismatches InRelease
                    by_hash = f"{component}/binary-{architecture}/by-hash/SHA256/{sums[name]}"
                    self._download(f"{self.mirror_of(suite)}/dists/{suite}/{by_hash}", path)
                    if _sha256(path) != sums[name]:
                        path.unlink()
                        raise ImageError(f"{suite}/{name} does not match InRelease; retry")
                files.append((suite, path))
        return files

    def index(self, architecture: str) -> PackageIndex:
        """The candidates of the release and its update suites for one architecture."""
        packages: list[Package] = []
        for suite, path in self.index_files(architecture):
            packages.extend(parse_packages(lzma.decompress(path.read_bytes()).decode(), suite))
        return PackageIndex(architecture, packages)

    def deb_path(self, package: Package) -> Path:
        return self.cache_dir / "debs" / package.deb_name

    def fetch(self, packages: Iterable[Package]) -> dict[str, Path]:
        """Each package's ``.deb`` in the cache, downloading (in parallel) what is missing."""
        wanted = list(packages)
        missing = [p for p in wanted if not self.deb_path(p).exists()]

        def get(package: Package) -> None:
            path = self.deb_path(package)
            mirror = self.mirror_of(package.suite or self.suite)
            self._download(f"{mirror}/{package.filename}", path)
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
    """The exact packages of a build (per tree, each with its suite), to replay it with
    ``--lock``."""
    import json

    lock = {
        "suite": suite,
        "suites": list(update_suites(suite)),
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
