"""A damaged or lost database is refused at start with one line that says what to restore, not
served as an empty or broken cluster; a full disk is reported as a full disk."""

from __future__ import annotations

import errno
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from k3py.cluster.server.store import SQLiteDatastore, StoreError
from k3py.cluster.server.store.integrity import last_good_path, open_failure

PAGE = 4096


async def _filled(path: Path, count: int = 300) -> None:
    store = SQLiteDatastore(path)
    await store.start()
    for number in range(count):
        await store.create(f"/registry/configmaps/default/c{number}", b"x" * 2000)
    await store.close()


async def test_empty_or_missing_database_of_an_existing_cluster_is_refused(
    tmp_path: Path,
) -> None:
    db = tmp_path / "state.db"
    db.touch()
    with pytest.raises(StoreError, match="is empty.*--cluster-reset"):
        await SQLiteDatastore(db, cluster_existed=True).start()
    db.unlink()
    with pytest.raises(StoreError, match="is missing"):
        await SQLiteDatastore(db, cluster_existed=True).start()
    reset = SQLiteDatastore(db, cluster_existed=True, reset=True)
    await reset.start()  # the operator asked for an empty cluster
    await reset.close()
    fresh = SQLiteDatastore(tmp_path / "new.db")  # a new cluster: no PKI before this start
    await fresh.start()
    await fresh.close()


async def test_a_zeroed_page_is_found_and_the_last_good_copy_named(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    await _filled(db)
    reopened = SQLiteDatastore(db)  # a clean start saves the last good copy
    await reopened.start()
    await reopened.close()
    assert last_good_path(db).exists()
    with db.open("r+b") as file:
        file.seek(PAGE * 40)
        file.write(b"\0" * PAGE)
    with pytest.raises(StoreError) as refused:
        await SQLiteDatastore(db).start()
    message = str(refused.value)
    assert "is damaged" in message
    assert str(last_good_path(db)) in message
    assert "\n" not in message
    # The copy it names is whole.
    copy = sqlite3.connect(last_good_path(db))
    assert copy.execute("PRAGMA quick_check").fetchall() == [("ok",)]
    assert copy.execute("SELECT count(*) FROM kine").fetchone()[0] >= 300
    copy.close()


async def test_flipped_header_bytes_are_refused(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    await _filled(db, 20)
    with db.open("r+b") as file:
        file.write(b"\xff" * 200)
    with pytest.raises(StoreError, match="is damaged"):
        await SQLiteDatastore(db).start()


def test_a_full_disk_is_called_a_full_disk(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    for error in (
        OSError(errno.ENOSPC, "No space left on device"),
        sqlite3.OperationalError("database or disk is full"),
    ):
        message = str(open_failure(db, error))
        assert "the disk is full" in message
        assert "restore" not in message


def _server(data_dir: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "k3py",
            "server",
            "--data-dir",
            str(data_dir),
            "--https-listen-port",
            "0",
            "--disable-agent",
            "--disable-scheduler",
            "--write-kubeconfig",
            str(data_dir / "kubeconfig.yaml"),
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.integration
def test_server_refuses_an_emptied_database_of_its_cluster(tmp_path: Path) -> None:
    """The CLI: a 0-byte state.db where a cluster ran stops the server with one line."""
    first = _server(tmp_path)
    try:
        for _ in range(300):
            if (tmp_path / "kubeconfig.yaml").exists():
                break
            time.sleep(0.1)
        assert (tmp_path / "kubeconfig.yaml").exists(), "the first start did not finish"
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=30)
    db = tmp_path / "server" / "db" / "state.db"
    db.write_bytes(b"")
    second = _server(tmp_path)
    _, stderr = second.communicate(timeout=60)
    assert second.returncode != 0
    assert "--cluster-reset" in stderr
    assert "Traceback" not in stderr
    reset = _server(tmp_path, "--cluster-reset")
    try:
        (tmp_path / "kubeconfig.yaml").unlink()
        for _ in range(300):
            if (tmp_path / "kubeconfig.yaml").exists():
                break
            time.sleep(0.1)
        assert (tmp_path / "kubeconfig.yaml").exists(), "--cluster-reset did not start"
    finally:
        reset.send_signal(signal.SIGTERM)
        reset.communicate(timeout=30)
