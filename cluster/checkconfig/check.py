"""Judging a kernel against the requirements: the checker's three entry points.

* :func:`check_kernel_dir` checks an unpacked kernel that is not running (a rootfs or an
  extracted kernel package): ``ROOT/boot/config-<release>`` with ``ROOT/lib/modules/<release>``
  (or ``usr/lib/modules``), where an ``=m`` option passes only if its module is really there.
  The image builder calls it before it builds an image.
* :func:`check_config_file` checks one config file; when that file is the running kernel's, the
  running-system checks are added.
* :func:`check_running_system` finds the running kernel's config the way K3s's check-config does
  and checks it together with the running system.

``require`` names optional groups to treat as required (``{"vxlan", "ipvs"}``).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from k3py.cluster.checkconfig.errors import (
    CheckConfigError,
    ConfigNotFoundError,
    UnknownGroupError,
)
from k3py.cluster.checkconfig.kconfig import (
    KernelConfig,
    parse_config,
    read_config,
    version_of_release,
)
from k3py.cluster.checkconfig.modules import BUILTIN, ModuleIndex, find_modules_dir
from k3py.cluster.checkconfig.report import Finding, GroupReport, Report, State
from k3py.cluster.checkconfig.requirements import (
    Choice,
    Requirement,
    Requirements,
    load_requirements,
)
from k3py.cluster.checkconfig.system import (
    HostSystem,
    LiveSystem,
    config_candidates,
    running_system_findings,
)


def _required_groups(requirements: Requirements, require: Iterable[str]) -> frozenset[str]:
    wanted = frozenset(require)
    unknown = wanted - set(requirements.names())
    if unknown:
        raise UnknownGroupError(
            f"--require: no group named {', '.join(sorted(unknown))} "
            f"(groups: {', '.join(requirements.names())})"
        )
    return wanted | {g.name for g in requirements.groups if g.required}


def _judge_choice(
    choice: Choice, config: KernelConfig, modules: ModuleIndex | None, modules_note: str
) -> tuple[State | None, str]:
    """The state of one symbol (None when absent) and what was seen."""
    value = config.value(choice.config)
    if value is None:
        return None, "not set"
    if value != "m":
        return State.ENABLED, "" if value == "y" else f"={value}"
    if not choice.modules:
        return State.MODULE, "no module name known for it: not verified"
    if modules is None:
        return State.MODULE, f"{', '.join(choice.modules)} ({modules_note})"
    for name in choice.modules:
        where = modules.find(name)
        if where is not None:
            return State.MODULE, f"{name} ({where})" if where != BUILTIN else f"{name} (built in)"
    wanted = " or ".join(choice.modules)
    pruned = any(modules.was_built(n) for n in choice.modules)
    return None, (
        f"=m, but module {wanted} is not in {modules.directory}"
        + (" (pruned after the build)" if pruned else "")
    )


def _judge(
    requirement: Requirement,
    required: bool,
    config: KernelConfig,
    modules: ModuleIndex | None,
    modules_note: str,
) -> Finding | None:
    applies = requirement.applies(config.version, config.arch)
    if applies is False:
        return None
    if applies is None:
        return Finding(
            requirement.label,
            State.WARNING,
            "not checked: the kernel version is unknown and this applies "
            + requirement.describe_versions(),
        )
    seen = []
    for choice in requirement.choices:
        state, detail = _judge_choice(choice, config, modules, modules_note)
        if state is not None:
            if len(requirement.choices) > 1:
                detail = f"CONFIG_{choice.config}={config.value(choice.config)}" + (
                    f": {detail}" if detail else ""
                )
            return Finding(requirement.label, state, detail)
        seen.append(detail)
    first = requirement.choices[0]
    pruned = any(d.startswith("=m") for d in seen)
    if pruned:
        names = ", ".join(f"{m}.ko*" for c in requirement.choices for m in c.modules)
        hint = f"keep {names} in the image, or build it in: CONFIG_{first.config}=y"
    elif not required:
        hint = ""  # an optional feature that is simply absent: the reason says enough
    elif len(requirement.choices) > 1:
        hint = "set one of " + ", ".join(f"CONFIG_{c.config}=y" for c in requirement.choices)
    else:
        hint = f"set CONFIG_{first.config}=y (or =m) in the kernel config and rebuild the kernel"
    return Finding(
        requirement.label,
        State.MISSING if required else State.WARNING,
        f"{'; '.join(dict.fromkeys(seen))}: {requirement.reason}",
        hint,
        (f"CONFIG_{first.config}=y",),
    )


def evaluate(
    config: KernelConfig,
    requirements: Requirements,
    required: frozenset[str],
    modules: ModuleIndex | None,
    modules_note: str,
) -> tuple[GroupReport, ...]:
    """Judge every applicable requirement; optional groups not in ``required`` only warn."""
    groups = []
    for group in requirements.groups:
        is_required = group.name in required
        findings = tuple(
            f
            for r in group.requirements
            if (f := _judge(r, is_required, config, modules, modules_note)) is not None
        )
        if findings:
            groups.append(GroupReport(group.name, is_required, group.summary, findings))
    return tuple(groups)


def _report(
    config: KernelConfig,
    release: str | None,
    requirements: Requirements,
    required: frozenset[str],
    modules: ModuleIndex | None,
    modules_note: str,
    system: tuple[Finding, ...] = (),
) -> Report:
    groups = evaluate(config, requirements, required, modules, modules_note)
    if system:
        groups += (GroupReport("system", True, "the running system", system),)
    version = config.version or (version_of_release(release) if release else None)
    return Report(
        config.source,
        release,
        version,
        config.arch,
        modules_note or (modules.directory.as_posix() if modules else ""),
        groups,
        tuple(g.name for g in requirements.groups if g.name in required),
    )


def _kernel_release(root: Path, release: str | None) -> str:
    boot = root / "boot"
    if release is not None:
        if not (boot / f"config-{release}").is_file():
            raise ConfigNotFoundError(f"{boot}/config-{release} does not exist")
        return release
    found = sorted(p.name.removeprefix("config-") for p in boot.glob("config-*") if p.is_file())
    if not found:
        raise ConfigNotFoundError(
            f"no {boot}/config-<release>: give the root of an unpacked kernel package or rootfs"
        )
    with_modules = [r for r in found if find_modules_dir(root, r)]
    candidates = with_modules or found
    if len(candidates) > 1:
        raise CheckConfigError(
            f"{root} holds several kernels ({', '.join(candidates)}): "
            "choose one with --kernel-release",
            exit_code=64,
        )
    return candidates[0]


def check_kernel_dir(
    root: Path,
    require: Iterable[str] = (),
    *,
    release: str | None = None,
    requirements: Requirements | None = None,
) -> Report:
    """Check the kernel unpacked under ``root``, including whether its ``=m`` modules are there."""
    if not root.is_dir():
        raise ConfigNotFoundError(f"{root} is not a directory: give the root of an unpacked kernel")
    requirements = requirements or load_requirements()
    required = _required_groups(requirements, require)
    release = _kernel_release(root, release)
    config = read_config(root / "boot" / f"config-{release}")
    directory = find_modules_dir(root, release)
    if directory is None:
        expected = root / "lib" / "modules" / release
        index = ModuleIndex(expected, frozenset(), {}, frozenset())
        note = f"{expected} does not exist: every =m option fails"
        return _report(config, release, requirements, required, index, note)
    return _report(config, release, requirements, required, ModuleIndex.scan(directory), "")


def _running_modules(
    config: KernelConfig, release: str, system: HostSystem
) -> tuple[ModuleIndex | None, str]:
    if config.value("MODULES") is None:
        return None, "not used (CONFIG_MODULES is not set)"
    directory = system.modules_dir(release)
    if directory is None:
        return None, f"not verified: no /lib/modules/{release}"
    return ModuleIndex.scan(directory), ""


def _check_running(
    config: KernelConfig, requirements: Requirements, required: frozenset[str], system: HostSystem
) -> Report:
    release = system.kernel_release()
    index, note = _running_modules(config, release, system)
    findings = running_system_findings(system)
    return _report(config, release, requirements, required, index, note, findings)


def check_config_file(
    path: Path,
    require: Iterable[str] = (),
    *,
    system: HostSystem | None = None,
    requirements: Requirements | None = None,
) -> Report:
    """Check one config file; the running-system checks join in if it is the running kernel's."""
    system = system or LiveSystem()
    requirements = requirements or load_requirements()
    required = _required_groups(requirements, require)
    config = read_config(path)
    if _is_running_config(path, config, system):
        return _check_running(config, requirements, required, system)
    return _report(
        config, None, requirements, required, None, "not verified: not the running kernel"
    )


def _is_running_config(path: Path, config: KernelConfig, system: HostSystem) -> bool:
    if str(path.absolute()) in config_candidates(system.kernel_release()):
        return True
    running = system.read_bytes("/proc/config.gz")
    if running is None:
        return False
    try:
        return parse_config(running, "/proc/config.gz").values == config.values
    except CheckConfigError:
        return False


def check_running_system(
    require: Iterable[str] = (),
    *,
    system: HostSystem | None = None,
    requirements: Requirements | None = None,
) -> Report:
    """Find the running kernel's config (``/proc/config.gz``, ``/boot/config-…``) and check it."""
    system = system or LiveSystem()
    requirements = requirements or load_requirements()
    required = _required_groups(requirements, require)
    candidates = config_candidates(system.kernel_release())
    for candidate in candidates:
        data = system.read_bytes(candidate)
        if data is not None:
            config = parse_config(data, candidate)
            return _check_running(config, requirements, required, system)
    raise ConfigNotFoundError(
        f"cannot find the running kernel's config (looked in {', '.join(candidates)}): "
        "load it with 'modprobe configs', or give the config's path"
    )
