"""The agent's process-wide memory settings: aiohttp imported without the system CA store, no
huge pages, and libraries the long-running agent does not need kept out of it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PROBE = """
import json, os, ssl
before = os.environ.get("SSL_CERT_FILE")
from k3py.cluster.agent import memory
memory.import_aiohttp()
import aiohttp.connector
print(json.dumps({
    "unused_default": aiohttp.connector._SSL_CONTEXT_VERIFIED.cert_store_stats()["x509_ca"],
    "made_later": ssl.create_default_context().cert_store_stats()["x509_ca"],
    "environment_kept": os.environ.get("SSL_CERT_FILE") == before,
}))
"""


def _probe(code: str) -> str:
    """What ``code`` prints in a fresh interpreter (imports there start from nothing)."""
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout


def test_aiohttp_default_context_holds_no_cas_and_later_contexts_load_the_system_store() -> None:
    out = _probe(PROBE)
    got = json.loads(out)
    assert got["unused_default"] == 0
    assert got["made_later"] > 0  # the system store is still there for anything that asks
    assert got["environment_kept"]


def test_the_agent_opts_out_of_transparent_huge_pages() -> None:
    probe = (
        "from k3py.cluster.agent import memory\n"
        "memory.no_huge_pages()\n"
        "print(open('/proc/self/status').read())\n"
    )
    status = _probe(probe)
    # Kernels since 5.0 show the flag; a board's kernel would otherwise use huge pages.
    assert "THP_enabled:\t0" in status


def test_the_updater_and_the_runtime_leave_cryptography_and_docker_unloaded() -> None:
    # The agent under the firmware launcher imports the OTA updater at start; cryptography
    # (a bundle's signature) and the docker package (a pull) load only when used.
    probe = (
        "import sys\n"
        "import k3py.cluster.agent.agent, k3py.cluster.ota.agent\n"
        "print(sorted({'cryptography', 'docker', 'requests'} & set(sys.modules)))\n"
    )
    out = _probe(probe)
    assert out.strip() == "[]"


def test_the_agent_starts_without_aiohttp() -> None:
    # Everything up to the Node's first registration (the join included) runs without it: its
    # import is the largest of the start; the agent imports it once the Node is registered.
    probe = (
        "import sys\n"
        "import k3py.cli, k3py.cluster.agent.cli, k3py.cluster.agent.agent\n"
        "import k3py.cluster.agent.node.identity, k3py.cluster.client.blocking\n"
        "print('aiohttp' in sys.modules)\n"
    )
    assert _probe(probe).strip() == "False"


def test_docker_is_imported_without_requests_encoding_guessers(tmp_path: Path) -> None:
    # Debian's requests takes chardet when it is installed: a stand-in that says so if loaded.
    (tmp_path / "chardet").mkdir()
    (tmp_path / "chardet" / "__init__.py").write_text("raise SystemExit('chardet loaded')\n")
    probe = (
        "import sys\n"
        f"sys.path.insert(0, {str(tmp_path)!r})\n"
        "from k3py.cluster.agent.runtime.docker import import_docker\n"
        "import_docker()\n"
        "import requests.compat\n"
        "print(requests.compat.chardet, 'chardet' in sys.modules)\n"
    )
    out = _probe(probe)
    assert out.split() == ["None", "False"]
