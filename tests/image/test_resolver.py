"""The resolver's rules on small indices: newest across suites, versions, Provides, Conflicts,
Breaks; and the suite of every package in the lock."""

from __future__ import annotations

from pathlib import Path

import pytest

from k3py.image.debian import (
    PackageIndex,
    parse_packages,
    read_lock,
    satisfies,
    update_suites,
    write_lock,
)
from k3py.image.errors import ImageError


def _stanza(name: str, version: str, **fields: str) -> str:
    extra = "".join(f"{k.replace('_', '-').title()}: {v}\n" for k, v in fields.items())
    return (
        f"Package: {name}\nVersion: {version}\nArchitecture: arm64\n{extra}"
        f"Filename: pool/{name}_{version}_arm64.deb\nSize: 1\nSHA256: 00\n"
    )


def _index(*suites: tuple[str, list[str]]) -> PackageIndex:
    packages = []
    for suite, stanzas in suites:
        packages += list(parse_packages("\n".join(stanzas), suite))
    return PackageIndex("arm64", packages)


def test_versions_compare_as_dpkg_does() -> None:
    assert satisfies("3.5.1-1+deb13u1", ">>", "3.5.1-1")
    assert satisfies("1:1.0", ">=", "2.0")  # the epoch wins
    assert satisfies("1.0~rc1", "<<", "1.0")
    assert not satisfies("2.41-12", "=", "2.41-12+deb13u1")


def test_a_release_reads_its_update_and_security_suites() -> None:
    assert update_suites("trixie") == ("trixie", "trixie-updates", "trixie-security")
    assert update_suites("sid") == ("sid",)


def test_the_newest_version_across_suites_is_chosen_and_keeps_its_suite() -> None:
    index = _index(
        ("trixie", [_stanza("openssl", "3.5.1-1"), _stanza("app", "1", depends="openssl")]),
        ("trixie-security", [_stanza("openssl", "3.5.1-1+deb13u1")]),
        ("trixie-updates", [_stanza("openssl", "3.5.0-9")]),
    )
    chosen = {p.name: (p.version, p.suite) for p in index.resolve(["app"])}
    assert chosen["openssl"] == ("3.5.1-1+deb13u1", "trixie-security")


def test_versioned_dependency_skips_an_alternative_too_old_and_names_what_is_missing() -> None:
    index = _index(
        ("trixie", [
            _stanza("app", "1", depends="libnew (>= 2) | libold"),
            _stanza("libnew", "1.5"),
            _stanza("libold", "1"),
            _stanza("tool", "1", depends="libnew (>= 2)"),
        ]),
    )  # fmt: skip
    assert [p.name for p in index.resolve(["app"])] == ["app", "libold"]
    with pytest.raises(
        ImageError, match=r"tool depends on libnew \(>= 2\).*libnew 1\.5 \(trixie\)"
    ):
        index.resolve(["tool"])


def test_only_a_versioned_provides_meets_a_versioned_dependency() -> None:
    index = _index(
        ("trixie", [
            _stanza("app", "1", depends="mta (>= 2)"),
            _stanza("aaa-mta", "1", provides="mta"),
            _stanza("zzz-mta", "1", provides="mta (= 2.1)"),
        ]),
    )  # fmt: skip
    assert [p.name for p in index.resolve(["app"])] == ["app", "zzz-mta"]


def test_conflicts_and_breaks_rule_out_an_alternative() -> None:
    index = _index(
        ("trixie", [
            _stanza("app", "1", depends="first | second, helper"),
            _stanza("first", "1"),
            _stanza("second", "1"),
            _stanza("helper", "1", depends="base"),
            _stanza("base", "1", breaks="first (<< 2)"),
            _stanza("other", "1", depends="sole", conflicts="sole"),
            _stanza("sole", "1"),
        ]),
    )  # fmt: skip
    # helper's base arrives after first was chosen: the clash is reported, not ignored.
    with pytest.raises(ImageError, match=r"base 1 breaks first \(<< 2\)"):
        index.resolve(["app"])
    # A package chosen first rules out what clashes with it later.
    assert [p.name for p in index.resolve(["base", "app"])] == ["app", "base", "helper", "second"]
    with pytest.raises(ImageError, match="other 1 conflicts with sole"):
        index.resolve(["other"])


def test_the_lock_records_each_packages_suite(tmp_path: Path) -> None:
    index = _index(
        ("trixie", [_stanza("app", "1", depends="lib")]),
        ("trixie-security", [_stanza("lib", "1+deb13u1")]),
    )
    lock = tmp_path / "lock.json"
    write_lock(lock, {"rootfs": index.resolve(["app"])}, "trixie")
    replayed = {p.name: p.suite for p in read_lock(lock)["rootfs"]}
    assert replayed == {"app": "trixie", "lib": "trixie-security"}
