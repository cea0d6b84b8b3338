"""Step Functions' payload limit, enforced locally: moto passes any size, AWS does not.

AWS refuses a state input or output, a task's parameters or result, over 256 KiB
(``States.DataLimitExceeded``, which no Catch can handle: the execution fails). Here every
history event moto records, in the execution and in every Map iteration or Distributed Map
child, is measured; an oversized payload is recorded with its state, and the local runner
and the tests fail on it.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

PAYLOAD_LIMIT_BYTES = 256 * 1024
_MEASURED = ("input", "output", "parameters")


@dataclass(frozen=True)
class Payload:
    event: str  # e.g. StateEntered, TaskSucceeded
    state: str  # the state's name where the event names it
    field: str  # input, output or parameters
    size: int  # bytes, UTF-8


@dataclass
class PayloadCheck:
    largest: Payload | None = None
    too_large: list[Payload] = field(default_factory=list)
    measured: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def measure(self, event_type: str, details: dict[str, Any] | None) -> None:
        for value in (details or {}).values():
            if not isinstance(value, dict):
                continue
            for name in _MEASURED:
                text = value.get(name)
                if not isinstance(text, str):
                    continue
                payload = Payload(
                    str(getattr(event_type, "value", event_type)),
                    str(value.get("name", "")),
                    name,
                    len(text.encode()),
                )
                with self._lock:
                    self.measured += 1
                    if self.largest is None or payload.size > self.largest.size:
                        self.largest = payload
                    if payload.size > PAYLOAD_LIMIT_BYTES:
                        self.too_large.append(payload)

    def describe(self) -> list[str]:
        return [
            f"{p.event} {p.state or '(execution)'}: {p.field} of {p.size:,} bytes exceeds "
            f"Step Functions' {PAYLOAD_LIMIT_BYTES:,} (States.DataLimitExceeded in AWS)"
            for p in self.too_large
        ]


@contextlib.contextmanager
def measured_payloads(check: PayloadCheck) -> Iterator[None]:
    """Measure the payload of every history event moto's interpreter records."""
    from moto.stepfunctions.parser.asl.eval.event.event_manager import EventManager

    original = EventManager.add_event

    def add_event(
        self: Any,
        context: Any,
        event_type: Any,
        event_details: Any = None,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        check.measure(event_type, event_details)
        return original(self, context, event_type, event_details, *args, **kwargs)

    EventManager.add_event = add_event  # type: ignore[method-assign]
    try:
        yield
    finally:
        EventManager.add_event = original  # type: ignore[method-assign]


@contextlib.contextmanager
def tolerated_failures_enforced() -> Iterator[None]:
    """A Distributed Map fails when more of its items failed than it tolerates.

    AWS fails the Map run with ``States.ExceedToleratedFailureThreshold`` (a Catch can handle
    it) once its failed items exceed ``ToleratedFailureCount`` or ``ToleratedFailurePercentage``,
    both zero unless set. moto counts the failed items and lets the Map succeed, so a run
    would go on without them. Here the Map fails after its items ran, as in AWS for a
    threshold of zero (AWS may stop earlier: no item's outcome depends on that)."""
    from moto.stepfunctions.parser.api import ExecutionFailedEventDetails, HistoryEventType
    from moto.stepfunctions.parser.asl.component.common.error_name.failure_event import (
        FailureEvent,
        FailureEventException,
    )
    from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name import (
        StatesErrorName,
    )
    from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name_type import (
        StatesErrorNameType,
    )
    from moto.stepfunctions.parser.asl.component.state.exec.state_map.iteration import (
        distributed_iteration_component as distributed,
    )
    from moto.stepfunctions.parser.asl.eval.event.event_detail import EventDetails

    component = distributed.DistributedIterationComponent
    original = component._map_run

    def _map_run(self: Any, env: Any, eval_input: Any) -> None:
        original(self, env, eval_input)
        items = eval_input.map_run_record.item_counter
        failed = items.failed.get() + items.timed_out.get()
        total = max(1, items.total.get())
        # AWS fails the run past either threshold that is set, and past zero if none is; moto
        # reads an unset one as 0, so "past both" is exact unless both are set (this
        # project sets neither).
        if (
            failed > eval_input.tolerated_failure_count
            and 100 * failed / total > eval_input.tolerated_failure_percentage
        ):
            error = StatesErrorNameType.StatesExceedToleratedFailureThreshold
            raise FailureEventException(
                failure_event=FailureEvent(
                    env=env,
                    error_name=StatesErrorName(typ=error),
                    event_type=HistoryEventType.ExecutionFailed,
                    event_details=EventDetails(  # type: ignore[typeddict-item]
                        executionFailedEventDetails=ExecutionFailedEventDetails(
                            error=error.to_name(),
                            cause=f"The specified tolerated failure threshold was exceeded: "
                            f"{failed} of {items.total.get()} items failed",
                        )
                    ),
                )
            )

    component._map_run = _map_run  # type: ignore[method-assign]
    try:
        yield
    finally:
        component._map_run = original  # type: ignore[method-assign]
