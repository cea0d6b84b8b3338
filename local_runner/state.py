"""STATE, the folder a local run keeps between runs: one `make run` at a time, saved whole.

What a run leaves (the S3 objects of the pipeline's buckets, and a copy of the warehouse
table) is written into a new snapshot folder, then made current by replacing one pointer
file, an atomic rename: a run killed at any moment leaves the previous snapshot current and
whole. The warehouse (an embedded PostgreSQL, also in STATE) is committed by the run's Load,
before the snapshot is saved: if a run dies in between, the warehouse is ahead of the saved
ledger, and the next run puts the table back as it was saved (it then recomputes whatever
the restored state says is pending).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO


class StateInUse(RuntimeError):
    """Another `make run` holds the same STATE folder."""


@dataclass(frozen=True)
class Snapshot:
    folder: Path

    @property
    def s3(self) -> Path:
        return self.folder / "s3"

    @property
    def warehouse_csv(self) -> Path:
        return self.folder / "warehouse.csv"

    @property
    def warehouse_loads(self) -> list[list[str]]:
        """(run_id, loaded_at) of every load the saved table holds."""
        path = self.folder / "warehouse-loads.json"
        return json.loads(path.read_text()) if path.is_file() else []


class StateFolder:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._saved = path / "saved"
        self._pointer = self._saved / "CURRENT"

    @contextlib.contextmanager
    def in_use(self) -> Iterator[None]:
        """Hold STATE for this run; refuse if another run holds it. The lock is the kernel's
        (flock): a run that is killed releases it with its process."""
        self.path.mkdir(parents=True, exist_ok=True)
        with (self.path / ".lock").open("a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise StateInUse(
                    f"STATE={self.path} is in use by another `make run` ({_holder(handle)}); "
                    "wait for it to end, or use another STATE"
                ) from None
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()}\n")
            handle.flush()
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def current(self) -> Snapshot | None:
        """The last snapshot saved whole (or the folder an older runner saved S3 in)."""
        if self._pointer.is_file():
            return Snapshot(self._saved / self._pointer.read_text().strip())
        legacy = self.path / "s3"
        return Snapshot(self.path) if legacy.is_dir() else None

    def save(
        self,
        write_s3: Callable[[Path], int],
        write_warehouse: Callable[[Path], list[list[str]]],
    ) -> int:
        """Write a new snapshot aside, then make it current with one atomic rename."""
        name = f"snapshot-{secrets.token_hex(4)}"
        folder = self._saved / name
        folder.mkdir(parents=True)
        saved = write_s3(folder / "s3")
        loads = write_warehouse(folder / "warehouse.csv")
        (folder / "warehouse-loads.json").write_text(json.dumps(loads))
        pointer = self._saved / f"CURRENT.{name}"
        pointer.write_text(name + "\n")
        pointer.replace(self._pointer)  # the switch: all of the new state, or none of it
        for stale in self._saved.iterdir():
            if stale.name not in {name, "CURRENT"}:
                _remove(stale)
        _remove(self.path / "s3")  # an older runner's copy
        return saved


def _holder(handle: IO[str]) -> str:
    handle.seek(0)
    return handle.read().strip() or "its pid unknown"


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        path.unlink()
