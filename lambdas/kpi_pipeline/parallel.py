"""S3 round trips in parallel: the pipeline's only concurrency inside a function."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

WORKERS = 16  # S3 answers many requests at once; a function's CPU is not the bottleneck

_In = TypeVar("_In")
_Out = TypeVar("_Out")


def parallel(function: Callable[[_In], _Out], items: Iterable[_In]) -> list[_Out]:
    """``function`` over ``items`` on a few threads, results in order."""
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        return list(pool.map(function, items))
