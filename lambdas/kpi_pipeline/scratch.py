"""Scratch space: Lambda's ``/tmp``, whose size the function's configuration sets.

Lambda gives a function 512 MB of ``/tmp`` unless ``EphemeralStorage`` says more (up to
10,240 MB), and keeps it between invocations of a warm environment. A full ``/tmp`` is an
OSError that no retry fixes, and every later run would fail the same way. So a step works in
a :class:`ScratchSpace` that knows the configured size (``EPHEMERAL_STORAGE_MB``): it checks
that what is about to be downloaded fits, caps DuckDB's spill to what is left, and turns
running out into :class:`ScratchSpaceExhausted`, whose message names the setting to raise.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb

from kpi_pipeline.errors import ScratchSpaceExhausted
from kpi_pipeline.settings import ScratchSettings

_PREFIX = "kpi-pipeline-"
_MB = 1024 * 1024
LAMBDA_MAX_MB = 10_240


@dataclass(frozen=True)
class ScratchSpace:
    path: Path  # this invocation's own directory
    root: Path  # the whole scratch area (/tmp): what the budget counts
    capacity_mb: int | None  # None: not limited (a laptop)
    setting: str  # the setting that sizes it, for the message

    def free_bytes(self) -> int | None:
        if self.capacity_mb is None:
            return None
        left = self.capacity_mb * _MB - _size_of(self.root)
        return max(0, min(left, shutil.disk_usage(self.root).free))

    def reserve(self, nbytes: int, what: str) -> None:
        """Fail now, naming the setting, if ``nbytes`` more would not fit."""
        free = self.free_bytes()
        if free is not None and nbytes > free:
            raise self.exhausted(f"{what} needs {_mb(nbytes)} MB and {_mb(free)} MB are free")

    def spill_limit_mb(self, keep_free_mb: int = 64) -> int | None:
        """How much DuckDB may spill: what is free, less room for the step's own outputs."""
        free = self.free_bytes()
        return None if free is None else max(1, free // _MB - keep_free_mb)

    def exhausted(self, detail: str) -> ScratchSpaceExhausted:
        return ScratchSpaceExhausted(
            f"the function's ephemeral storage (/tmp) is too small: {detail} of its "
            f"{self.capacity_mb:,} MB. Raise "
            f"{self.setting} in cdk.json (Lambda allows up to {LAMBDA_MAX_MB:,} MB), or make "
            "the inputs smaller"
        )


@contextlib.contextmanager
def scratch_space(
    root: str, prefix: str, *, capacity_mb: int | None = None, step: str | None = None
) -> Iterator[ScratchSpace]:
    """A fresh directory under ``root`` for one invocation, removed afterwards.

    Files an earlier invocation left behind (one that timed out never cleaned up) are
    removed first: Lambda runs one invocation at a time per environment.
    """
    base = Path(root)
    base.mkdir(parents=True, exist_ok=True)
    for stale in base.glob(f"{_PREFIX}*"):
        shutil.rmtree(stale, ignore_errors=True)
    setting = f"functions.{step}.ephemeral_storage_mb" if step else "the ephemeral storage"
    with tempfile.TemporaryDirectory(prefix=f"{_PREFIX}{prefix}-", dir=base) as path:
        space = ScratchSpace(Path(path), base, capacity_mb, setting)
        try:
            yield space
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise space.exhausted("the disk filled up") from exc
            raise
        except duckdb.OutOfMemoryException as exc:
            if "max_temp_directory_size" in str(exc):
                raise space.exhausted("DuckDB's spill filled what was free") from exc
            raise


def open_scratch(
    settings: ScratchSettings, prefix: str
) -> contextlib.AbstractContextManager[ScratchSpace]:
    """The invocation's scratch space, as the function's settings size it."""
    return scratch_space(
        settings.work_dir,
        prefix,
        capacity_mb=settings.ephemeral_storage_mb,
        step=settings.pipeline_step,
    )


def _size_of(folder: Path) -> int:
    total = 0
    for dirpath, _, names in os.walk(folder):
        for name in names:
            with contextlib.suppress(OSError):  # a file removed while we count
                total += (Path(dirpath) / name).stat().st_size
    return total


def _mb(nbytes: int) -> str:
    return f"{nbytes / _MB:,.1f}"
