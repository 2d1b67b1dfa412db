"""``k3py check-config`` as a user runs it, on this machine's own kernel and running system."""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pexpect
import pytest

from k3py.cluster.checkconfig.system import LiveSystem, config_candidates

ROW = re.compile(r"^  (\S.*?)\s+(enabled|module|ok|warning|missing)\b")


def k3py(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "k3py", "check-config", *argv],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        timeout=60,
    )


def _running_config() -> str:
    for candidate in config_candidates(LiveSystem().kernel_release()):
        if Path(candidate).exists():
            return candidate
    pytest.skip("this machine exposes no kernel config (/proc/config.gz, /boot/config-…)")


def test_this_machine_table_status_and_exit_code() -> None:
    source = _running_config()
    done = k3py()
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"kernel config: {source}")
    states = [m.group(2) for line in lines if (m := ROW.match(line))]
    assert states.count("enabled") > 40
    groups = [
        line.split(" ")[0] for line in lines if re.match(r"^\S+ \((required|optional)\)", line)
    ]
    assert {"namespaces", "cgroups", "netfilter", "vxlan", "ipvs", "system"} <= set(groups)
    missing = states.count("missing")
    assert done.returncode == min(missing, 63)
    assert lines[-1] == ("STATUS: pass" if missing == 0 else f"STATUS: {missing} failures")
    assert "\033[" not in done.stdout  # not a terminal: no colour
    assert done.stderr == ""
    report = json.loads(k3py("--json").stdout)
    assert report["failures"] == missing
    assert report["source"] == source
    system = next(g for g in report["groups"] if g["name"] == "system")
    checked = {f["name"] for f in system["findings"]}
    assert {"cgroup hierarchy", "cgroup controllers", "memory cgroup", "swap", "routes"} <= checked


def test_missing_fragment_lists_a_line_per_failure() -> None:
    _running_config()
    table = k3py()
    fragment = k3py("--missing-fragment")
    assert fragment.returncode == table.returncode
    lines = fragment.stdout.splitlines()
    assert lines[0].startswith("# k3py check-config: options that fix the failures of")
    assert all(re.fullmatch(r"CONFIG_\w+=y|# .*", line) for line in lines)


def test_colour_only_on_a_terminal() -> None:
    _running_config()
    child = pexpect.spawn(
        sys.executable, ["-m", "k3py", "check-config"], env={**os.environ, "NO_COLOR": ""}
    )
    child.expect(pexpect.EOF, timeout=60)
    assert b"\033[32menabled" in child.before
    child.close()


def test_this_machines_config_given_as_a_path_matches_discovery(tmp_path: Path) -> None:
    source = _running_config()
    data = Path(source).read_bytes()
    copy = tmp_path / "config.gz"
    copy.write_bytes(data if data[:2] == b"\x1f\x8b" else gzip.compress(data))
    discovered = json.loads(k3py("--json").stdout)
    given = json.loads(k3py("--json", str(copy)).stdout)
    # The copy is the running kernel's config, so it is judged with the running system too.
    assert given["groups"] == discovered["groups"]


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["/nonexistent"], 66, "k3py: error: /nonexistent does not exist"),
        (["/etc/passwd"], 65, "k3py: error: /etc/passwd is not a kernel config"),
        (["--kernel-dir", "/nonexistent"], 66, "k3py: error: /nonexistent is not a directory"),
        (["--require", "vxlan,nosuch"], 64, "k3py: error: --require: no group named nosuch"),
    ],
)
def test_bad_input_is_one_line_and_a_sysexits_code(
    argv: list[str], code: int, message: str
) -> None:
    done = k3py(*argv)
    assert done.returncode == code
    assert done.stdout == ""
    assert done.stderr.startswith(message)
    assert done.stderr.count("\n") == 1
    assert "Traceback" not in done.stderr


def test_truncated_gzip_is_exit_65(tmp_path: Path) -> None:
    packed = gzip.compress(b"CONFIG_MEMCG=y\n" * 2000)
    cut = tmp_path / "config.gz"
    cut.write_bytes(packed[: len(packed) // 2])
    done = k3py(str(cut))
    assert done.returncode == 65
    assert (
        done.stderr
        == f"k3py: error: {cut} is a truncated gzip file (it ends early): copy it again\n"
    )
