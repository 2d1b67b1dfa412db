"""A pod's volumes on the node: emptyDir, hostPath, configMap, secret, downwardAPI, projected.

Each pod gets ``<agent dir>/pods/<uid>/volumes/<plugin>/<name>``. ConfigMap, Secret and
downward API volumes are written the way the kubelet writes them so that an update is atomic
for the program reading them: the files live in a timestamped directory, ``..data`` is a symlink
to it, and each key is a symlink through ``..data``; an update writes a new directory and swaps
``..data`` with one rename. The directory is bind-mounted, so containers see the swap.
``hostPath`` follows its ``type`` (``DirectoryOrCreate``, ``FileOrCreate``, checks for the
others). A missing, non-optional ConfigMap or Secret raises :class:`VolumeError` (the pod stays
in ``ContainerCreating`` with a ``FailedMount`` event) until it appears.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import shutil
import stat
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from k3py.cluster.agent.podsync.spec import ObjectSource, Pod, meta, spec
from k3py.cluster.agent.runtime import Mount
from k3py.cluster.agent.satokens import TokenSource
from k3py.errors import K3pyError

DATA_LINK = "..data"
_DEFAULT_MODE = 0o644


class VolumeError(K3pyError):
    """A volume cannot be set up yet (a missing ConfigMap or Secret, a hostPath check)."""


def _atomic_files(directory: Path, files: Mapping[str, tuple[bytes, int]]) -> bool:
    """Write ``files`` (relative path → (content, mode)) with the ``..data`` swap.

    Returns True when the content changed."""
    directory.mkdir(parents=True, exist_ok=True)
    current = directory / DATA_LINK
    if current.is_symlink():
        existing = directory / os.readlink(current)
        if _same_content(existing, files):
            return False
    stamp = f"..{time.strftime('%Y_%m_%d_%H_%M_%S')}.{time.monotonic_ns()}"
    target = directory / stamp
    for relative, (content, mode) in files.items():
        path = target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        path.chmod(mode)
    target.mkdir(exist_ok=True)
    temporary = directory / "..data_tmp"
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()
    temporary.symlink_to(stamp)
    old = os.readlink(current) if current.is_symlink() else None
    temporary.rename(current)
    tops = {relative.split("/", 1)[0] for relative in files}
    for top in tops:
        link = directory / top
        if not link.is_symlink():
            link.symlink_to(f"{DATA_LINK}/{top}")
    for entry in directory.iterdir():
        if entry.is_symlink() and not entry.name.startswith("..") and entry.name not in tops:
            entry.unlink()
    if old and old != stamp:
        shutil.rmtree(directory / old, ignore_errors=True)
    return True


def _same_content(existing: Path, files: Mapping[str, tuple[bytes, int]]) -> bool:
    present = (
        {str(p.relative_to(existing)) for p in existing.rglob("*") if p.is_file()}
        if existing.is_dir()
        else set()
    )
    if present != set(files):
        return False
    for relative, (content, mode) in files.items():
        path = existing / relative
        if path.read_bytes() != content or stat.S_IMODE(path.stat().st_mode) != mode:
            return False
    return True


def _source_files(
    data: Mapping[str, bytes] | None, source: Mapping[str, Any], what: str
) -> dict[str, tuple[bytes, int]]:
    """The files of a configMap or secret volume whose object's data is ``data`` (None: absent)."""
    mode = int(source.get("defaultMode") or _DEFAULT_MODE)
    optional = bool(source.get("optional"))
    if data is None:
        if optional:
            return {}
        raise VolumeError(f"{what} not found")
    return _items(data, source.get("items"), mode, optional, what)


def _items(
    data: Mapping[str, bytes], items: list[Any] | None, mode: int, optional: bool, what: str
) -> dict[str, tuple[bytes, int]]:
    if not items:
        return {key: (value, mode) for key, value in data.items()}
    files: dict[str, tuple[bytes, int]] = {}
    for item in items:
        key = str(item.get("key", ""))
        if key not in data:
            if optional:
                continue
            raise VolumeError(f'{what} has no key "{key}"')
        files[str(item.get("path") or key)] = (data[key], int(item.get("mode") or mode))
    return files


def _config_map_data(cm: Mapping[str, Any]) -> dict[str, bytes]:
    data = {k: str(v).encode() for k, v in (cm.get("data") or {}).items()}
    for key, value in (cm.get("binaryData") or {}).items():
        with contextlib.suppress(binascii.Error, ValueError):
            data[key] = base64.b64decode(str(value))
    return data


def _secret_data(secret: Mapping[str, Any]) -> dict[str, bytes]:
    data: dict[str, bytes] = {}
    for key, value in (secret.get("data") or {}).items():
        with contextlib.suppress(binascii.Error, ValueError):
            data[key] = base64.b64decode(str(value))
    for key, value in (secret.get("stringData") or {}).items():
        data[key] = str(value).encode()
    return data


def _downward_files(pod: Pod, source: Mapping[str, Any], mode: int) -> dict[str, tuple[bytes, int]]:
    metadata = meta(pod)
    files: dict[str, tuple[bytes, int]] = {}
    for item in source.get("items") or []:
        path = str(item.get("fieldRef", {}).get("fieldPath", ""))
        if path in {"metadata.labels", "metadata.annotations"}:
            values = metadata.get(path.split(".")[1]) or {}
            text = "".join(f'{k}="{v}"\n' for k, v in sorted(values.items()))
        elif path.startswith("metadata."):
            text = str(metadata.get(path.split(".", 1)[1], ""))
        else:
            text = ""
        files[str(item.get("path", ""))] = (text.encode(), int(item.get("mode") or mode))
    return files


class PodVolumes:
    """Sets up and removes the volume directories of pods under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def pod_dir(self, uid: str) -> Path:
        return self.root / "pods" / uid

    def _dir(self, uid: str, plugin: str, name: str) -> Path:
        return self.pod_dir(uid) / "volumes" / plugin / name

    def _projection(
        self, pod: Pod, volume: Mapping[str, Any], objects: ObjectSource
    ) -> dict[str, tuple[bytes, int]] | None:
        """The files of a configMap/secret/downwardAPI/projected volume; None if not one."""
        namespace = str(meta(pod).get("namespace", "default"))
        if "configMap" in volume:
            source = volume["configMap"] or {}
            name = str(source.get("name", ""))
            cm = objects.config_map(namespace, name)
            data = None if cm is None else _config_map_data(cm)
            return _source_files(data, source, f'configmap "{name}"')
        if "secret" in volume:
            source = volume["secret"] or {}
            name = str(source.get("secretName", ""))
            secret = objects.secret(namespace, name)
            data = None if secret is None else _secret_data(secret)
            return _source_files(data, source, f'secret "{name}"')
        if "downwardAPI" in volume:
            source = volume["downwardAPI"] or {}
            return _downward_files(pod, source, int(source.get("defaultMode") or _DEFAULT_MODE))
        if "projected" in volume:
            source = volume["projected"] or {}
            mode = int(source.get("defaultMode") or _DEFAULT_MODE)
            files: dict[str, tuple[bytes, int]] = {}
            for part in source.get("sources") or []:
                # Service account tokens come from the TokenRequest API (the agent's tokens).
                token_source = part.get("serviceAccountToken")
                if isinstance(token_source, dict) and isinstance(objects, TokenSource):
                    token = objects.service_account_token(pod, token_source)
                    if token is not None:
                        path = str(token_source.get("path") or "token")
                        files[path] = (token.encode(), mode)
                sub = {k: v for k, v in part.items() if k != "serviceAccountToken"}
                if "configMap" in sub:
                    sub["configMap"] = {"defaultMode": mode, **(sub["configMap"] or {})}
                if "secret" in sub:
                    secret_source = dict(sub["secret"] or {})
                    secret_source["secretName"] = secret_source.pop("name", "")
                    sub["secret"] = {"defaultMode": mode, **secret_source}
                if "downwardAPI" in sub:
                    sub["downwardAPI"] = {"defaultMode": mode, **(sub["downwardAPI"] or {})}
                files.update(self._projection(pod, sub, objects) or {})
            return files
        return None

    def setup(self, pod: Pod, objects: ObjectSource) -> dict[str, Path]:
        """Create or refresh every volume of ``pod``; returns volume name → host path."""
        uid = str(meta(pod).get("uid", ""))
        paths: dict[str, Path] = {}
        for volume in spec(pod).get("volumes") or []:
            name = str(volume.get("name", ""))
            if "hostPath" in volume:
                paths[name] = self._host_path(volume["hostPath"] or {})
                continue
            files = self._projection(pod, volume, objects)
            if files is not None:
                plugin = next(
                    k for k in ("configMap", "secret", "downwardAPI", "projected") if k in volume
                )
                directory = self._dir(uid, plugin, name)
                _atomic_files(directory, files)
                paths[name] = directory
                continue
            # emptyDir, and volume kinds this node cannot provide, are plain directories.
            directory = self._dir(uid, "emptyDir", name)
            directory.mkdir(parents=True, exist_ok=True)
            directory.chmod(0o777)
            paths[name] = directory
        return paths

    def refresh(self, pod: Pod, objects: ObjectSource) -> bool:
        """Rewrite projected volumes whose source changed; True if any did."""
        uid = str(meta(pod).get("uid", ""))
        changed = False
        for volume in spec(pod).get("volumes") or []:
            try:
                files = self._projection(pod, volume, objects)
            except VolumeError:
                continue
            if files is None:
                continue
            plugin = next(
                k for k in ("configMap", "secret", "downwardAPI", "projected") if k in volume
            )
            changed |= _atomic_files(self._dir(uid, plugin, str(volume.get("name"))), files)
        return changed

    @staticmethod
    def _host_path(source: Mapping[str, Any]) -> Path:
        path = Path(str(source.get("path", "")))
        kind = str(source.get("type") or "")
        if kind == "DirectoryOrCreate":
            path.mkdir(parents=True, exist_ok=True, mode=0o755)
        elif kind == "FileOrCreate":
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch(mode=0o644, exist_ok=True)
        elif kind == "Directory" and not path.is_dir():
            raise VolumeError(f"hostPath type check failed: {path} is not a directory")
        elif kind == "File" and not path.is_file():
            raise VolumeError(f"hostPath type check failed: {path} is not a file")
        elif kind == "Socket" and not (path.exists() and stat.S_ISSOCK(path.stat().st_mode)):
            raise VolumeError(f"hostPath type check failed: {path} is not a socket")
        return path

    @staticmethod
    def mounts(container: Mapping[str, Any], paths: Mapping[str, Path]) -> tuple[Mount, ...]:
        result = []
        for mount in container.get("volumeMounts") or []:
            source = paths.get(str(mount.get("name", "")))
            if source is None:
                raise VolumeError(f'volume "{mount.get("name")}" is not defined in the pod')
            sub_path = str(mount.get("subPath") or "")
            if sub_path:
                if ".." in Path(sub_path).parts or sub_path.startswith("/"):
                    raise VolumeError(
                        f"subPath {sub_path!r} must be a relative path inside the volume"
                    )
                source = source / sub_path
                if not source.exists():
                    source.mkdir(parents=True, exist_ok=True)
                source = source.resolve()
            result.append(
                Mount(str(source), str(mount.get("mountPath", "")), bool(mount.get("readOnly")))
            )
        return tuple(result)

    def remove(self, uid: str) -> None:
        shutil.rmtree(self.pod_dir(uid), ignore_errors=True)

    def known_uids(self) -> list[str]:
        base = self.root / "pods"
        return [p.name for p in base.iterdir()] if base.is_dir() else []
