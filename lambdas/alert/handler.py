"""Alert: how an execution ended, or an alarm that fired, told once the same way everywhere
(e-mail and Slack through the alert topic, PagerDuty): kpi_pipeline.alerting."""

from __future__ import annotations

from kpi_pipeline import alerting
from kpi_pipeline.contracts import AlertEvent, AlertSent, PreflightRequest, PreflightResult
from kpi_pipeline.observability import step_handler
from kpi_pipeline.settings import AlertSettings, load


def _preflight(request: PreflightRequest) -> PreflightResult:
    return alerting.preflight(request, load(AlertSettings))


@step_handler("Alert", AlertEvent, preflight=_preflight)
def handler(event: AlertEvent) -> AlertSent:
    return alerting.deliver(event, load(AlertSettings))
