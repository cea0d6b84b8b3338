"""Logger, metrics and tracer, created once for every step (AWS Lambda Powertools).

Every handler is wrapped by :func:`step_handler`, which parses the state input into the
step's request model, tags logs with the run id, records the step's duration and returns
the step's result model as JSON. Log lines are structured JSON; secrets never reach them:
no step logs its settings, a DSN or a secret, and error messages name settings, not values.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any, TypeVar

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit, single_metric
from pydantic import BaseModel

from kpi_pipeline.metric_names import (  # noqa: F401 - re-exported for the steps
    DUPLICATE_PLAYS,
    FILES_ALREADY_PROCESSED,
    FILES_PROCESSED,
    FILES_QUARANTINED,
    KPI_ROWS_LOADED,
    NAMESPACE,
    PLAYS_INGESTED,
    ROWS_QUARANTINED,
    SERVICE,
    SOURCE_ROWS_EXTRACTED,
    STEP_DURATION,
)

logger = Logger(service=SERVICE)
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)
tracer = Tracer(service=SERVICE)

Request = TypeVar("Request", bound=BaseModel)
Result = TypeVar("Result", bound=BaseModel)
Handler = Callable[[dict[str, Any], Any], dict[str, Any]]


def count(name: str, value: float, **dimensions: str) -> None:
    """Add a Count metric; with dimensions it is emitted on its own (e.g. per reason)."""
    if not dimensions:
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
        return
    with single_metric(
        name=name, unit=MetricUnit.Count, value=value, namespace=NAMESPACE
    ) as metric:
        metric.add_dimension(name="service", value=SERVICE)
        for key, dimension in dimensions.items():
            metric.add_dimension(name=key, value=dimension)


def step_handler(
    step: str, request_model: type[Request]
) -> Callable[[Callable[[Request], Result]], Handler]:
    """Turn ``logic(request) -> result`` into a Lambda handler for the step ``step``."""

    def decorate(logic: Callable[[Request], Result]) -> Handler:
        @logger.inject_lambda_context(clear_state=True)
        @metrics.log_metrics
        @tracer.capture_lambda_handler(capture_response=False)
        @functools.wraps(logic)
        def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
            request = request_model.model_validate(event)
            logger.append_keys(step=step, run_id=getattr(request, "run_id", None))
            metrics.add_dimension(name="step", value=step)
            started = time.perf_counter()
            try:
                result = logic(request)
            except Exception:
                logger.exception("step failed")
                raise
            finally:
                elapsed_ms = (time.perf_counter() - started) * 1000
                metrics.add_metric(
                    name=STEP_DURATION, unit=MetricUnit.Milliseconds, value=elapsed_ms
                )
            logger.info("step finished", extra={"duration_ms": round(elapsed_ms, 1)})
            return result.model_dump(mode="json")

        return handler

    return decorate
