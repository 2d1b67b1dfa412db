"""The shipped fragment ``kernel-config/k3py-required.config``: every required option as ``=y``.

It is generated from ``requirements.toml`` so the two cannot drift apart (a test compares them);
regenerate it with
``python -m k3py.cluster.checkconfig.fragment > kernel-config/k3py-required.config``.
"""

from __future__ import annotations

import sys

from k3py.cluster.checkconfig.requirements import Requirements, data_file, load_requirements

REQUIRED_FRAGMENT_FILE = "k3py-required.config"


def required_fragment(requirements: Requirements) -> str:
    """Every required option as ``CONFIG_…=y`` for current kernels (first of any alternatives)."""
    lines = [
        "# k3py: kernel options every k3py node needs, ready to merge into a defconfig",
        "# (scripts/kconfig/merge_config.sh). Generated from requirements.toml by",
        "# `python -m k3py.cluster.checkconfig.fragment`; optional groups such as vxlan and",
        "# ipvs are not included: add them for the features you use.",
    ]
    seen: set[str] = set()
    for group in requirements.groups:
        if not group.required:
            continue
        lines.append(f"\n# {group.name}: {group.summary}")
        for req in group.requirements:
            if req.until is not None or req.arch:
                continue  # options of old kernels or of one architecture only
            symbol = req.choices[0].config
            if symbol not in seen:
                seen.add(symbol)
                lines.append(f"CONFIG_{symbol}=y")
    return "\n".join(lines) + "\n"


def shipped_required_fragment() -> str:
    return data_file(REQUIRED_FRAGMENT_FILE)


if __name__ == "__main__":
    sys.stdout.write(required_fragment(load_requirements()))
