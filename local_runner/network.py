"""The parsers' network, enforced here as their security group enforces it in AWS.

IngestFile and ReplayQuarantine parse what anyone may drop in the landing bucket. In AWS they
run in the VPC behind a security group that lets HTTPS out to the prefix lists of S3 and
DynamoDB only (``Step.egress``, ``infra/functions.py``): a call to any other service, or a
connection to anywhere else, times out there. Here every function shares one process and moto
answers in it, so nothing would stop them: while such a function runs, a client of another
service is refused, and so is any socket it opens or name it resolves.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from botocore.client import BaseClient

from infra.steps import ALL_STEPS
from local_runner.template import LocalPipeline

_STEPS = {step.key: step for step in ALL_STEPS}


class EgressRefused(ConnectionRefusedError):
    """What the function's security group would not let out (in AWS: a connect timeout)."""


@dataclass(frozen=True)
class EgressRule:
    function: str  # the state that runs it, e.g. IngestFile
    services: frozenset[str]  # botocore service names it may reach

    def refuse(self, what: str) -> EgressRefused:
        reach = " and ".join(_SERVICE_NAMES.get(s, s) for s in sorted(self.services, reverse=True))
        return EgressRefused(
            f"{self.function} may reach {reach} only (its security group in AWS lets HTTPS "
            f"out to their prefix lists and nothing else): {what} would time out there"
        )


_SERVICE_NAMES = {"s3": "S3", "dynamodb": "DynamoDB"}


def egress_rules(pipeline: LocalPipeline) -> dict[str, EgressRule]:
    """The network rule of each function that has one, by its local access key."""
    from local_runner.aws import function_access_key

    rules = {}
    for function in pipeline.functions:
        step = _STEPS.get(function.environment.get("PIPELINE_STEP", ""))
        if step is not None and step.egress:
            rules[function_access_key(function)] = EgressRule(step.state, step.egress)
    return rules


@contextlib.contextmanager
def network_enforced(
    pipeline: LocalPipeline, calling_function: Callable[[], str | None]
) -> Iterator[None]:
    """Refuse, while a function with a rule runs, what its security group would."""
    rules = egress_rules(pipeline)

    def rule_of(client: BaseClient | None = None) -> EgressRule | None:
        if client is not None:
            credentials = client._request_signer._credentials
            key = credentials.access_key if credentials else None
            if key in rules:
                return rules[key]
        key = calling_function()
        return rules.get(key) if key else None

    original: Callable[..., Any] = BaseClient._make_api_call

    def make_api_call(self: BaseClient, operation: str, params: dict[str, Any]) -> Any:
        rule = rule_of(self)
        service = self.meta.service_model.service_name
        if rule is not None and service not in rule.services:
            raise rule.refuse(f"a {service} call ({operation})")
        return original(self, operation, params)

    _ACTIVE.append(rule_of)
    BaseClient._make_api_call = make_api_call
    try:
        yield
    finally:
        BaseClient._make_api_call = original
        _ACTIVE.remove(rule_of)


# An audit hook cannot be removed once added: one for the process, consulting the rules of
# whatever runs are active.
_ACTIVE: list[Callable[[], EgressRule | None]] = []
_SOCKET_EVENTS = {
    "socket.connect": "a connection to",
    "socket.getaddrinfo": "resolving",
    "socket.sendto": "a datagram to",
    "socket.sendmsg": "a message to",
    "subprocess.Popen": "a process running",
}


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event not in _SOCKET_EVENTS or not _ACTIVE:
        return
    for rule_of in list(_ACTIVE):
        rule = rule_of()
        if rule is not None:
            target = args[0] if event in {"socket.getaddrinfo", "subprocess.Popen"} else args[1]
            if isinstance(target, tuple):
                target = ":".join(str(part) for part in target[:2])
            raise rule.refuse(f"{_SOCKET_EVENTS[event]} {target}")


sys.addaudithook(_audit)
