"""S3 round trips in parallel: the pipeline's only concurrency inside a function."""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

WORKERS = 16  # S3 answers many requests at once; a function's CPU is not the bottleneck

_In = TypeVar("_In")
_Out = TypeVar("_Out")


def parallel(function: Callable[[_In], _Out], items: Iterable[_In]) -> list[_Out]:
    """``function`` over ``items`` on a few threads, results in order; each call sees the
    caller's context variables (the invocation's log keys, the local runner's)."""
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        futures = [pool.submit(contextvars.copy_context().run, function, i) for i in items]
        return [future.result() for future in futures]
