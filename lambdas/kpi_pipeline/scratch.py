"""Scratch space: Lambda keeps /tmp between invocations, so every call cleans up after itself."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def scratch_dir(root: str, prefix: str) -> Iterator[Path]:
    Path(root).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"{prefix}-", dir=root) as path:
        yield Path(path)
