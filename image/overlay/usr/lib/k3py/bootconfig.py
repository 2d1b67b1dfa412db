"""Apply the boot partition's ``k3py.yaml`` on every boot (in the spirit of k3OS's config.yaml).

One image serves many boards: what differs per board (role check, server URL, token, node name,
labels, taints, node IP, flannel interface, SSH keys, root password hash, DHCP or static network)
is read here from the FAT boot partition and written where the system reads it:
``/etc/k3py/config.yaml`` (flags for ``k3py server``/``k3py agent``, written as JSON),
``/run/k3py/boot.env`` (shell variables for the early-boot script), ``/run/k3py/shadow``, root's
authorized keys, and
``/run/k3py/dockerd.disabled`` and ``containerd.disabled`` on a server-only board
(``disable-agent: true``). On a first boot (``--grow-data DEVICE``) it grows the data
partition first.
A bad file, or a key that is neither a board setting nor a flag of the role's command, is reported
on the console in one line and the defaults apply, so a typo never bricks a board.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

ROLE_FILE = Path("/etc/k3py-role")
CONFIG = Path("/etc/k3py/config.yaml")
BOOT_ENV = Path("/run/k3py/boot.env")
SHADOW = Path("/run/k3py/shadow")
AUTHORIZED_KEYS = Path("/var/lib/root/.ssh/authorized_keys")
# k3py.yaml keys that set up the board itself; every other key is a flag of the role's command
# (K3s's names), checked against that command's own definitions: listed in CONFIG_KEYS by the
# image build, from the firmware when that list is absent.
CONFIG_KEYS = Path("/usr/lib/k3py/config-keys")
BOARD_KEYS = ("role", "hostname", "network", "root-password-hash", "ssh-authorized-keys")
# The supervisor parks a service whose marker file exists instead of starting it.
DOCKERD_DISABLED = Path("/run/k3py/dockerd.disabled")
CONTAINERD_DISABLED = Path("/run/k3py/containerd.disabled")


def say(message: str) -> None:
    print(f"k3py-bootconfig: {message}", file=sys.stderr)


def load(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        say(f"{path} is not valid YAML ({err}); using defaults")
        return {}
    if data is None:
        return {}
    if not isinstance(data, dict):
        say(f"{path}: expected a mapping of settings; using defaults")
        return {}
    return {str(k).replace("_", "-"): v for k, v in data.items()}


def cmdline_slot() -> str:
    try:
        words = Path("/proc/cmdline").read_text().split()
    except OSError:
        return "a"
    return next((w.split("=", 1)[1] for w in words if w.startswith("k3py.slot=")), "a")


def write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.new")
    partial.write_text(text)
    os.chmod(partial, mode)
    os.replace(partial, path)


def service_flags(settings: dict[str, Any], role: str) -> dict[str, Any]:
    """The settings that are flags of ``k3py <role>``; any other key is reported and ignored
    (its default applies), so a typo shows on the console without stopping the board."""
    try:
        valid = CONFIG_KEYS.read_text().split()
    except OSError:
        from k3py.cli import config_keys

        valid = config_keys(role)
    flags: dict[str, Any] = {}
    for key, value in settings.items():
        if key in valid:
            flags[key] = value
        elif key not in BOARD_KEYS:
            from k3py.cli import unknown_key_error

            say(unknown_key_error("k3py.yaml", key, [*valid, *BOARD_KEYS]) + "; ignored")
    return flags


def grow_data(device: str) -> None:
    """First boot: the data partition to the end of the card (``growdata.py``, beside this
    script, run in this process: a Python start costs an emulated board a third of a second)."""
    sys.path.insert(0, str(Path(__file__).parent))
    try:
        import growdata  # type: ignore[import-not-found]  # beside this script

        growdata.main(["growdata", device])
    except Exception as err:  # the board still boots, on the partition as it is
        say(f"could not grow {device}: {err}")


def main(argv: list[str]) -> int:
    args = argv[1:]
    if "--grow-data" in args:
        at = args.index("--grow-data")
        grow_data(args[at + 1])
        del args[at : at + 2]
    settings = load(Path(args[0]) if args else Path("/boot/firmware/k3py.yaml"))
    role = ROLE_FILE.read_text().strip()
    if settings.get("role", role) != role:
        say(
            f"k3py.yaml asks for role {settings['role']!r}, but this is a {role} image; "
            "ignoring the role (build a matching image to change it)"
        )

    flags = service_flags(settings, role)
    if role == "server" and not Path("/usr/sbin/dockerd").exists():
        # A server image carries no container runtime: the server runs no agent of its own.
        flags.setdefault("disable-agent", True)
    if role == "server" and str(flags.get("disable-agent", "")).lower() in {"true", "yes", "on"}:
        # A server-only board: its runtime would sit idle, so it is not started.
        write(DOCKERD_DISABLED, "disable-agent in k3py.yaml\n")
        write(CONTAINERD_DISABLED, "disable-agent in k3py.yaml\n")
    # JSON, which is YAML: the service reads it back without importing a YAML parser (about a
    # third of a second of an emulated board's start). A value JSON has no type for (a date)
    # is written as its text, which is what the flag takes.
    write(CONFIG, json.dumps(flags, indent=2, sort_keys=True, default=str) + "\n", 0o600)

    network = settings.get("network") or {}
    if not isinstance(network, dict):
        say("'network' must be a mapping (mode, interface, address, gateway, dns); using DHCP")
        network = {}
    dns = network.get("dns", [])
    env = {
        "K3PY_HOSTNAME": str(settings.get("hostname", settings.get("node-name", f"k3py-{role}"))),
        "K3PY_NETWORK": str(network.get("mode", "dhcp")),
        "K3PY_IFACE": str(network.get("interface", settings.get("flannel-iface", "eth0"))),
        "K3PY_ADDRESS": str(network.get("address", "")),
        "K3PY_GATEWAY": str(network.get("gateway", "")),
        "K3PY_DNS": " ".join(str(d) for d in (dns if isinstance(dns, list) else [dns])),
        "K3PY_SLOT": cmdline_slot(),
    }
    if env["K3PY_NETWORK"] == "static" and not env["K3PY_ADDRESS"]:
        say("network.mode is static but network.address is empty; using DHCP")
        env["K3PY_NETWORK"] = "dhcp"
    write(BOOT_ENV, "".join(f"{k}={shlex.quote(v)}\n" for k, v in env.items()))

    password = str(settings.get("root-password-hash", ""))
    write(SHADOW, f"root:{password}:19000:0:99999:7:::\n", 0o600)
    keys = settings.get("ssh-authorized-keys", [])
    if isinstance(keys, str):
        keys = [keys]
    write(AUTHORIZED_KEYS, "".join(f"{key}\n" for key in keys), 0o600)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
