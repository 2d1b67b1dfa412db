"""``make fuzz``: fuzz a real ``k3py server`` on loopback through its ``/openapi/v2`` document.

Starts ``k3py server`` (embedded SQLite, no agent, a kernel-chosen port), points schemathesis
(``--st``: its command in the venv ``make fuzz`` keeps apart from the test venv, whose pytest
it would otherwise join as a plugin) at ``/openapi/v2`` with the admin token, and lets it
generate requests for every operation the document describes, a bounded number of examples
each, within ``--minutes``. The run fails on any 5xx other than 503 (see
:mod:`tests.fuzz.hooks`), and when the server logged a traceback. Streams that do not end by
design (watch, exec, attach, port-forward, proxy, followed logs) are left out. Only loopback is
addressed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from pathlib import Path

import yaml

from tests.processes import server_argv, stop_process

REPO = Path(__file__).resolve().parents[2]
EXCLUDED_PATHS = r"(/watch/|/exec$|/attach$|/portforward$|/proxy|/log$)"


def _admin_token(data_dir: Path) -> str:
    for line in (data_dir / "server" / "cred" / "tokens").read_text().splitlines():
        if "system:masters" in line:
            return line.split(",", 1)[0]
    raise RuntimeError("the server wrote no admin token")


def _start(root: Path) -> tuple[subprocess.Popen[bytes], str]:
    kubeconfig = root / "kubeconfig.yaml"
    argv = server_argv(root / "data", kubeconfig, 0, "--disable-agent")
    log = (root / "server.log").open("ab")
    process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    deadline = time.monotonic() + 60
    while not kubeconfig.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"k3py server did not start:\n{(root / 'server.log').read_text()}")
        time.sleep(0.1)
    url = yaml.safe_load(kubeconfig.read_text())["clusters"][0]["cluster"]["server"]
    return process, str(url)


def run(st: str, minutes: float, examples: int, root: Path) -> int:
    process, url = _start(root)
    try:
        data = root / "data"
        command = [
            st,
            "run",
            f"{url}/openapi/v2",
            "--base-url",
            url,
            "-H",
            f"Authorization: Bearer {_admin_token(data)}",
            "--request-tls-verify",
            str(data / "server" / "tls" / "server-ca.crt"),
            "--checks",
            "no_unexpected_server_error",
            "--hypothesis-max-examples",
            str(examples),
            "--hypothesis-deadline",
            "None",
            "--request-timeout",
            "20000",
            "--exclude-path-regex",
            EXCLUDED_PATHS,
            "--workers",
            "2",
            "--no-color",
        ]
        env = {
            **os.environ,
            "SCHEMATHESIS_HOOKS": "tests.fuzz.hooks",
            "PYTHONPATH": str(REPO),
        }
        try:
            code = subprocess.run(command, env=env, timeout=minutes * 60, check=False).returncode
        except subprocess.TimeoutExpired:
            print(f"fuzz: stopped after {minutes:g} minutes (the time bound); no 5xx until then")
            code = 0
    finally:
        stop_process(process, grace=20)
    log = root / "server.log"
    if "Traceback" in log.read_text(errors="replace"):
        print(f"fuzz: the server logged a traceback; see {log} (use --keep DIR)")
        return 1
    return code


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--st", default="st", help="the schemathesis command")
    parser.add_argument("--minutes", type=float, default=4.0, help="time bound (default 4)")
    parser.add_argument("--examples", type=int, default=8, help="examples per operation")
    parser.add_argument("--keep", type=Path, help="keep the server's data and log here")
    args = parser.parse_args()
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        return run(args.st, args.minutes, args.examples, args.keep)
    with tempfile.TemporaryDirectory(prefix="k3py-fuzz-") as tmp:
        return run(args.st, args.minutes, args.examples, Path(tmp))


if __name__ == "__main__":
    raise SystemExit(main())
