"""Every handler: sample events, request validation, configuration errors."""

from __future__ import annotations

import re
from typing import Any

import pytest
from pydantic import ValidationError

from archive.handler import handler as archive_handler
from extract_rds.handler import check_source, extract_tables
from extract_s3.handler import ingest_file, list_new_files
from kpi_pipeline.contracts import (
    ArchiveRequest,
    IngestRequest,
    LoadRequest,
    RunRequest,
    TransformDateRequest,
    TransformRequest,
)
from kpi_pipeline.errors import ConfigurationError
from kpi_pipeline.layout import run_key
from load.handler import handler as load_handler
from tests.handlers.support import CONTEXT, EVENTS, LANDING_BUCKET, RUN, event, keys
from transform.handler import handler as transform_handler
from transform.plan import handler as plan_transform_handler

# A handler rejecting its event never reaches its metrics: Powertools then warns.
pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")


HANDLERS = {
    "check_source": check_source,
    "extract_rds": extract_tables,
    "list_new_files": list_new_files,
    "ingest_file": ingest_file,
    "plan_transform": plan_transform_handler,
    "transform": transform_handler,
    "load": load_handler,
    "archive": archive_handler,
}


def test_sample_events_are_valid_requests_of_their_step() -> None:
    models = {
        "check_source": RunRequest,
        "extract_rds": RunRequest,
        "list_new_files": RunRequest,
        "ingest_file": IngestRequest,
        "plan_transform": TransformRequest,
        "transform": TransformDateRequest,
        "load": LoadRequest,
        "archive": ArchiveRequest,
    }
    assert sorted(p.stem for p in EVENTS.glob("*.json")) == sorted(models)
    for step, model in models.items():
        assert model.model_validate(event(step)).run_id == RUN, step


@pytest.mark.parametrize("step", sorted(HANDLERS))
def test_an_event_without_run_id_is_rejected(step: str) -> None:
    bad = {k: v for k, v in event(step).items() if k != "run_id"}

    with pytest.raises(ValidationError) as raised:
        HANDLERS[step](bad, CONTEXT)
    assert [(e["loc"], e["type"]) for e in raised.value.errors()] == [(("run_id",), "missing")]


@pytest.mark.parametrize("step", sorted(HANDLERS))
@pytest.mark.parametrize("run_id", ["run 1", "a/b", "x" * 81, "run#2", "tab\there"])
def test_a_run_id_step_functions_refuses_is_rejected(step: str, run_id: str) -> None:
    with pytest.raises(ValidationError) as raised:
        HANDLERS[step](event(step, run_id=run_id), CONTEXT)
    assert [e["loc"] for e in raised.value.errors()] == [("run_id",)]


@pytest.mark.parametrize("run_id", ["rerun@2024-06-25", "fix+late-file", "_manual", "relancé-été"])
def test_every_execution_name_step_functions_accepts_is_a_run_id(run_id: str) -> None:
    """A console start named rerun@2024-06-25 used to fail every step: any name Step
    Functions accepts is a run id, and its S3 keys use a safe form of it."""
    request = RunRequest.model_validate({"run_id": run_id})
    key = run_key(request.run_id)
    assert re.fullmatch(r"[A-Za-z0-9._-]{1,90}", key)
    look_alike = re.sub(r"[^A-Za-z0-9._-]", "_", run_id)  # what a plain replacement gives
    if look_alike != run_id:
        assert run_key(run_id) != run_key(look_alike)  # two runs never share a key
    assert run_key("daily-2024-06-25") == "daily-2024-06-25"  # safe names stay as they are


def test_a_missing_data_bucket_is_a_configuration_error_naming_it(
    cloud: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DATA_BUCKET")

    with pytest.raises(ConfigurationError, match=r"DATA_BUCKET is not set") as raised:
        list_new_files(event("list_new_files"), CONTEXT)
    assert "LANDING_BUCKET" not in str(raised.value)
    assert keys(cloud.s3, LANDING_BUCKET) == []  # failed before touching anything
