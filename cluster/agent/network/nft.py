"""The pod network's nftables rules: masquerade to the outside, in k3py's own table.

k3py owns one nftables table, ``inet k3py``. Several parts of the agent put chains in it; each
owns the chains whose names start with its prefix and never touches the others':

- the pod network (this module): ``net-`` — ``net-postrouting`` (a ``nat`` chain on the
  ``postrouting`` hook) masquerades traffic from the cluster CIDR to anything outside it, and
  never pod-to-pod traffic; ``net-forward`` (a ``filter`` chain on ``forward``) accepts traffic
  from and to the cluster CIDR;
- services (``k3py.cluster.agent.proxy``): ``svc-`` chains, sets and maps.

A part changes its rules with one script given to ``nft -f -``, which the kernel applies as one
atomic transaction: ``add table inet k3py`` (a no-op when it exists), ``add chain`` for each of
its chains (idem), ``flush chain`` for each, then its rules. Other parts' chains are untouched
by such a script, so writers do not need to coordinate. :func:`remove_chains` deletes a part's
chains (``--flannel-backend none``), and the table with them once no chain is left in it.
Uninstalling k3py removes everything with ``nft delete table inet k3py``.

Docker's own iptables rules (on boards, iptables-nft) drop forwarded traffic by policy, and an
``accept`` in our table cannot overrule a ``drop`` in another table: so where Docker's
``DOCKER-USER`` chain exists — the place Docker reserves for its users' rules — the cluster
CIDR is accepted there too (:func:`allow_in_docker_user`).

The ``nft`` command is used rather than pyroute2's nftables support, which in 0.7 cannot compile
rules from text; ``nft`` is one small binary (Debian's ``nftables`` package).
"""

from __future__ import annotations

import asyncio
import json
import shutil

from k3py.cluster.agent.errors import AgentError

TABLE_FAMILY = "inet"
TABLE_NAME = "k3py"
TABLE = f"{TABLE_FAMILY} {TABLE_NAME}"
PREFIX = "net-"


class NftError(AgentError):
    """``nft`` failed or is missing."""


def masquerade_script(cluster_cidr: str) -> str:
    """The pod network's chains as one ``nft -f`` transaction."""
    return "\n".join(
        (
            f"add table {TABLE}",
            f"add chain {TABLE} net-postrouting {{ type nat hook postrouting priority srcnat;"
            " policy accept; }",
            f"add chain {TABLE} net-forward {{ type filter hook forward priority filter;"
            " policy accept; }",
            f"flush chain {TABLE} net-postrouting",
            f"flush chain {TABLE} net-forward",
            # Pod to pod: never rewritten (flannel's rules, in nftables words).
            f"add rule {TABLE} net-postrouting ip saddr {cluster_cidr} ip daddr {cluster_cidr}"
            " return",
            f"add rule {TABLE} net-postrouting ip saddr {cluster_cidr} ip daddr 224.0.0.0/4 return",
            f"add rule {TABLE} net-postrouting ip saddr {cluster_cidr} ip daddr != {cluster_cidr}"
            " counter masquerade fully-random",
            f"add rule {TABLE} net-forward ip saddr {cluster_cidr} counter accept",
            f"add rule {TABLE} net-forward ip daddr {cluster_cidr} counter accept",
            "",
        )
    )


async def _nft(*args: str, script: str | None = None) -> str:
    binary = shutil.which("nft")
    if binary is None:
        raise NftError("the nft command is missing (Debian package nftables)")
    process = await asyncio.create_subprocess_exec(
        binary,
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate(script.encode() if script is not None else None)
    if process.returncode != 0:
        command = " ".join(("nft", *args))
        raise NftError(f"{command} failed: {err.decode(errors='replace').strip()}")
    return out.decode()


async def apply_masquerade(cluster_cidr: str) -> None:
    await _nft("-f", "-", script=masquerade_script(cluster_cidr))


async def table_objects() -> list[tuple[str, str]] | None:
    """(kind, name) of the chains, sets and maps in k3py's table; None when there is none."""
    try:
        text = await _nft("-j", "list", "table", TABLE_FAMILY, TABLE_NAME)
    except NftError:
        return None
    found = []
    for item in json.loads(text).get("nftables", []):
        for kind in ("chain", "set", "map"):
            if kind in item:
                found.append((kind, str(item[kind]["name"])))
    return found


async def remove_chains(prefix: str = PREFIX) -> bool:
    """Delete the chains of one part (by prefix); the table too once empty. True if changed."""
    if shutil.which("nft") is None:
        return False
    objects = await table_objects()
    if objects is None:
        return False
    mine = [name for kind, name in objects if kind == "chain" and name.startswith(prefix)]
    if not mine:
        return False
    lines = [f"delete chain {TABLE} {name}" for name in mine]
    if len(mine) == len(objects):
        lines = [f"delete table {TABLE}"]
    await _nft("-f", "-", script="\n".join((*lines, "")))
    return True


async def _run(*argv: str) -> int:
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    return await process.wait()


async def allow_in_docker_user(cluster_cidr: str) -> bool:
    """Accept the cluster CIDR in Docker's ``DOCKER-USER`` chain, if there is one."""
    iptables = shutil.which("iptables")
    if iptables is None or await _run(iptables, "-w", "-n", "-L", "DOCKER-USER") != 0:
        return False
    for direction in ("-s", "-d"):
        rule = ("DOCKER-USER", direction, cluster_cidr, "-j", "ACCEPT")
        if await _run(iptables, "-w", "-C", *rule) != 0:
            await _run(iptables, "-w", "-I", *rule)
    return True
