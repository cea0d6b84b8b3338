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
from contextvars import ContextVar
from typing import Any, TypeVar

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.metrics import MetricUnit, single_metric
from pydantic import BaseModel

from kpi_pipeline.metric_names import (  # noqa: F401 - re-exported for the steps
    DUPLICATE_PLAYS,
    FILES_ALREADY_PROCESSED,
    FILES_IGNORED,
    FILES_PROCESSED,
    FILES_QUARANTINED,
    FILES_UNREADABLE,
    KPI_ROWS_LOADED,
    NAMESPACE,
    PLAYS_INGESTED,
    ROWS_QUARANTINED,
    SERVICE,
    SOURCE_ROWS_EXTRACTED,
    STEP_DURATION,
)

logger = Logger(service=SERVICE)
tracer = Tracer(service=SERVICE)

Request = TypeVar("Request", bound=BaseModel)
Result = TypeVar("Result", bound=BaseModel)
Handler = Callable[[dict[str, Any], Any], dict[str, Any]]

# The step being run. Everything per invocation lives in context variables and thread-local
# log keys, never in shared module state: locally, Map iterations run in parallel threads of
# one process (in AWS each invocation has its own process).
_current_step: ContextVar[str] = ContextVar("step", default="unknown")
_lambda_context: ContextVar[Any] = ContextVar("lambda_context", default=None)
_warm = False


def remaining_seconds() -> float | None:
    """How long the running invocation has left before Lambda stops it (None outside one)."""
    context = _lambda_context.get()
    return context.get_remaining_time_in_millis() / 1000 if context is not None else None


def count(name: str, value: float, **dimensions: str) -> None:
    """Emit a Count metric of the current step (extra dimensions: e.g. per reason)."""
    _emit(name, MetricUnit.Count, value, dimensions)


def _emit(name: str, unit: MetricUnit, value: float, dimensions: dict[str, str]) -> None:
    # One EMF document per metric: no buffer shared between concurrent invocations.
    with single_metric(name=name, unit=unit, value=value, namespace=NAMESPACE) as metric:
        metric.add_dimension(name="service", value=SERVICE)
        metric.add_dimension(name="step", value=_current_step.get())
        for key, dimension in dimensions.items():
            metric.add_dimension(name=key, value=dimension)


def step_handler(
    step: str,
    request_model: type[Request],
    *,
    preflight: Callable[[Any], BaseModel] | None = None,
    preflight_model: type[BaseModel] | None = None,
) -> Callable[[Callable[[Request], Result]], Handler]:
    """Turn ``logic(request) -> result`` into a Lambda handler for the step ``step``.

    An event ``{"preflight": true, ...}`` calls ``preflight`` instead (parsed into
    ``preflight_model``, by default :class:`PreflightRequest`): the step's checks of what it
    will need, run with its own function's role (kpi_pipeline.preflight)."""

    def decorate(logic: Callable[[Request], Result]) -> Handler:
        @tracer.capture_lambda_handler(capture_response=False)
        @functools.wraps(logic)
        def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
            global _warm
            token = _current_step.set(step)
            context_token = _lambda_context.set(context)
            logger.thread_safe_clear_keys()
            logger.thread_safe_append_keys(
                step=step,
                cold_start=not _warm,
                function_name=context.function_name,
                function_memory_size=context.memory_limit_in_mb,
                function_request_id=context.aws_request_id,
            )
            _warm = True
            started = time.perf_counter()
            try:
                if preflight is not None and event.get("preflight") is True:
                    from kpi_pipeline.contracts import PreflightRequest

                    checked = (preflight_model or PreflightRequest).model_validate(event)
                    logger.thread_safe_append_keys(run_id=getattr(checked, "run_id", None))
                    result: BaseModel = preflight(checked)
                else:
                    request = request_model.model_validate(event)
                    logger.thread_safe_append_keys(run_id=getattr(request, "run_id", None))
                    result = logic(request)
            except Exception:
                logger.exception("step failed")
                raise
            finally:
                elapsed_ms = (time.perf_counter() - started) * 1000
                _emit(STEP_DURATION, MetricUnit.Milliseconds, elapsed_ms, {})
                _current_step.reset(token)
                _lambda_context.reset(context_token)
            logger.info("step finished", extra={"duration_ms": round(elapsed_ms, 1)})
            logger.thread_safe_clear_keys()
            return result.model_dump(mode="json")

        return handler

    return decorate
