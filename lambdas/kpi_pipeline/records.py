"""The run's own records in S3: what IngestStreams decided for each file of the manifest."""

from __future__ import annotations

from kpi_pipeline.contracts import IngestResult
from kpi_pipeline.layout import Layout
from kpi_pipeline.parallel import parallel
from kpi_pipeline.storage import Storage


def read_ingest_results(storage: Storage, layout: Layout, run_id: str) -> list[IngestResult]:
    """Every file result this run's Map wrote, in manifest order."""
    prefix = layout.ingest_results_prefix(run_id)
    keys = [o.key for o in storage.list_objects(layout.data_bucket, prefix)]
    documents = parallel(lambda key: storage.get_json(layout.data_bucket, key), keys)
    results = [IngestResult.model_validate(doc) for doc in documents if doc is not None]
    return sorted(results, key=lambda r: r.index)
