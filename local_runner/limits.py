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
