"""The node's local store: its pods, and the ConfigMaps and Secrets they use, on disk.

Each pod bound to the node is written to ``<agent dir>/cache/pods/<uid>.json`` when it changes
(status included), and every ConfigMap or Secret such a pod refers to (volumes, ``env``,
``envFrom``, ``imagePullSecrets``) to ``cache/configmaps|secrets/<namespace>/<name>.json``. An
agent that starts while the server is unreachable reads its pods back from here and runs them;
the pod sync loop adopts the containers that still run, so nothing healthy restarts. Files are
written atomically (0600, the directory 0700: secrets live here) and only when their content
changed, which keeps flash wear low on boards.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from k3py.cluster.api.podrefs import pod_references
from k3py.fsutil import write_atomic

logger = logging.getLogger("k3py.agent.store")

Object = dict[str, Any]


def references(pod: Object) -> set[tuple[str, str, str]]:
    """(kind, namespace, name) of every ConfigMap and Secret the pod uses."""
    return {ref for ref in pod_references(pod) if ref[0] in ("configmaps", "secrets")}


class LocalStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._written: dict[Path, str] = {}

    def _write(self, path: Path, obj: Object) -> None:
        data = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
        digest = hashlib.sha256(data).hexdigest()
        if self._written.get(path) == digest:
            return
        if not self.root.exists():
            self.root.mkdir(parents=True, exist_ok=True)
            self.root.chmod(0o700)
        write_atomic(path, data, 0o600)
        self._written[path] = digest

    def _remove(self, path: Path) -> None:
        self._written.pop(path, None)
        path.unlink(missing_ok=True)

    @staticmethod
    def _load(path: Path) -> Object | None:
        try:
            value = json.loads(path.read_bytes())
        except (OSError, ValueError):
            logger.warning("unreadable local store entry", extra={"fields": {"path": str(path)}})
            return None
        return value if isinstance(value, dict) else None

    # -- pods -------------------------------------------------------------------------------

    def _pod_path(self, uid: str) -> Path:
        return self.root / "pods" / f"{uid}.json"

    def save_pod(self, pod: Object) -> None:
        uid = str((pod.get("metadata") or {}).get("uid", ""))
        if uid:
            self._write(self._pod_path(uid), pod)

    def delete_pod(self, uid: str) -> None:
        self._remove(self._pod_path(uid))

    def pods(self) -> list[Object]:
        directory = self.root / "pods"
        if not directory.is_dir():
            return []
        loaded = (self._load(p) for p in sorted(directory.glob("*.json")))
        return [pod for pod in loaded if pod is not None]

    # -- configmaps and secrets ---------------------------------------------------------------

    def _object_path(self, kind: str, namespace: str, name: str) -> Path:
        return self.root / kind / namespace / f"{name}.json"

    def save_object(self, kind: str, obj: Object) -> None:
        meta = obj.get("metadata") or {}
        path = self._object_path(kind, str(meta.get("namespace", "default")), str(meta.get("name")))
        self._write(path, obj)

    def delete_object(self, kind: str, namespace: str, name: str) -> None:
        self._remove(self._object_path(kind, namespace, name))

    def get_object(self, kind: str, namespace: str, name: str) -> Object | None:
        path = self._object_path(kind, namespace, name)
        return self._load(path) if path.exists() else None

    def prune_objects(self, wanted: Iterable[tuple[str, str, str]]) -> None:
        """Forget ConfigMaps and Secrets no stored pod uses any more."""
        keep = set(wanted)
        for kind in ("configmaps", "secrets"):
            base = self.root / kind
            if not base.is_dir():
                continue
            for path in base.glob("*/*.json"):
                if (kind, path.parent.name, path.stem) not in keep:
                    self._remove(path)
            for directory in base.iterdir():
                if directory.is_dir() and not any(directory.iterdir()):
                    shutil.rmtree(directory, ignore_errors=True)
