"""Objects the pipeline keeps and reads again: curated plays, pinned catalogues, quarantined
rows, the source's raw snapshots and marks. One that cannot be read (truncated, overwritten
by hand, a bad restore) fails the step with :class:`~kpi_pipeline.errors.CorruptObject`,
naming the object and what to do, never a bare parser error; the raw snapshot, kept only to
make the next source read incremental, is read around instead (kpi_pipeline.extract).
"""

from __future__ import annotations

from pathlib import Path

from kpi_pipeline.errors import CorruptObject
from kpi_pipeline.storage import Storage


def parquet_problem(path: Path) -> str | None:
    """Why the file is not a readable Parquet file (its footer and schema), or None."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pq.read_schema(path)
    except (pa.ArrowException, OSError) as exc:
        return str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
    return None


def download_parquet(
    storage: Storage,
    bucket: str,
    key: str,
    path: Path,
    *,
    what: str,
    remedy: str = CorruptObject.RESTORE,
) -> bool:
    """Download a kept Parquet object (False: there is none) and check it can be read."""
    if not storage.download_file(bucket, key, path):
        return False
    problem = parquet_problem(path)
    if problem:
        raise CorruptObject(
            f"{what} s3://{bucket}/{key} is not a readable Parquet file ({problem}): "
            + CorruptObject.RESTORE
        )
    return True
