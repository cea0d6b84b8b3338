"""Local AWS: moto's S3, Secrets Manager, SNS, Lambda and Step Functions, in-process.

moto executes the synthesized state machine itself (Choice, Map, Retry, Catch); each
Lambda task is handed to the real handler, imported from ``lambdas/`` and called in this
process with the function's event and a Lambda-like context.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import importlib
import io
import json
import logging
import os
import shutil
import sys
import threading
import time
import traceback
import uuid
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TextIO

import boto3
from botocore.config import Config
from moto import mock_aws
from moto.awslambda_simple.models import LambdaSimpleBackend

from local_runner.databases import dsn_as
from local_runner.faults import (
    LambdaKilled,
    LambdaOutOfMemory,
    SideEffects,
    current_run,
    observed,
)
from local_runner.iam import STATE_MACHINE_ACCESS_KEY, IamCheck, Principal, enforced
from local_runner.limits import PayloadCheck, measured_payloads, tolerated_failures_enforced
from local_runner.network import network_enforced
from local_runner.redshift.grammar import redshift_grammar_enforced
from local_runner.template import ACCOUNT, REGION, LocalFunction, LocalPipeline

MOTO_CONFIG = {
    "stepfunctions": {"execute_state_machine": True},
    "lambda": {"use_docker": False},
}
TERMINAL = {"SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"}
COPY_ROLE_ACCESS_KEY = "LOCALREDSHIFTCOPYROLE"

# The access key of the function whose handler runs in this context (None outside one).
_calling_function: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "calling_function", default=None
)


@dataclass(frozen=True)
class LambdaContext:
    """The attributes of the Lambda context object that the handlers and Powertools read."""

    function_name: str
    invoked_function_arn: str
    memory_limit_in_mb: int
    timeout_seconds: int
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    function_version: str = "$LATEST"
    log_group_name: str = "local"
    log_stream_name: str = "local"
    started: float = field(default_factory=time.monotonic)

    def get_remaining_time_in_millis(self) -> int:
        left = self.timeout_seconds - (time.monotonic() - self.started)
        return max(0, int(left * 1000))


@dataclass(frozen=True)
class Execution:
    run_id: str
    arn: str
    status: str
    output: dict[str, Any] | None
    error: str | None
    cause: str | None
    history: list[dict[str, Any]]

    @property
    def failed_state(self) -> str | None:
        """The state that raised, from the alert the Catch path built."""
        for event in reversed(self.history):
            details = event.get("stateExitedEventDetails") or {}
            if details.get("name") == "DescribeFailure":
                alert = json.loads(details.get("output", "{}")).get("alert", {})
                return str(alert.get("failed_state")) if alert else None
        return None

    def states_entered(self) -> list[str]:
        return [
            e["stateEnteredEventDetails"]["name"]
            for e in self.history
            if "stateEnteredEventDetails" in e
        ]


class LocalAws:
    """A context in which the synthesized pipeline runs against moto."""

    def __init__(
        self,
        pipeline: LocalPipeline,
        *,
        overrides: dict[str, str],
        secrets: dict[str, dict[str, object]],
        log_stream: TextIO | None = None,
        list_executions_lag_seconds: float = 1.0,
    ) -> None:
        self.pipeline = pipeline
        self._list_executions_lag = list_executions_lag_seconds
        self._overrides = overrides
        self._secrets = secrets
        self._log_stream = log_stream
        self._stack = contextlib.ExitStack()
        self._handlers: dict[str, tuple[LocalFunction, Callable[..., Any]]] = {}
        self._import_lock = threading.Lock()
        self.state_machine_arn = ""
        self.alert_queue_url = ""
        self.api_destination_queues: list[tuple[str, str]] = []  # (queue URL, InputPath)
        self._told: set[str] = set()  # the executions whose end reached the alert function
        self._stop_causes: dict[str, str] = {}  # StopExecution's cause, by execution
        self.iam = iam_check(pipeline)
        self.payloads = PayloadCheck()
        self.failures: list[tuple[str, str, str]] = []  # (function, error, traceback)
        self.zombies: list[threading.Thread] = []  # invocations of executions since stopped
        self._zombie_lock = threading.Lock()
        self._stopped_runs: set[str] = set()
        self._redriven: dict[str, str] = {}  # run id -> the ARN of the execution redriven
        self._redrives = 0
        env = pipeline.environment()
        self.side_effects = SideEffects(env.get("DATA_BUCKET", ""), env.get("LANDING_BUCKET", ""))

    # --- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> LocalAws:
        self._stack.enter_context(_patched_environ(self._environment()))
        self._stack.enter_context(mock_aws(config=MOTO_CONFIG))  # type: ignore[call-overload]
        self._stack.enter_context(_quicker_moto())
        self._stack.enter_context(_patched_invoke(self._invoke))
        self._stack.enter_context(_sdk_integration_casing())
        self._stack.enter_context(_grace_waits_for(self.await_zombies))
        self._stack.enter_context(_atomic_object_operations())
        self._stack.enter_context(_eventually_consistent_listing(self._list_executions_lag))
        self._stack.enter_context(_credentials_per_principal(self.iam))
        self._stack.enter_context(enforced(self.iam))
        # Entered after the IAM check, so checked before it: the network refuses first.
        self._stack.enter_context(network_enforced(self.pipeline, _calling_function.get))
        self._stack.enter_context(redshift_grammar_enforced())
        self._stack.enter_context(measured_payloads(self.payloads))
        self._stack.enter_context(tolerated_failures_enforced())
        self._stack.enter_context(observed(self.side_effects, self._step_of))
        self._reset_pipeline_caches()
        self._route_logs()
        self._quiet_moto()
        self._create_resources()
        return self

    def __exit__(self, *exc: object) -> None:
        self._reset_pipeline_caches()
        self._stack.close()

    def _environment(self) -> dict[str, str]:
        return {
            # moto answers everything; fake credentials guarantee no real AWS call.
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
            "POWERTOOLS_TRACE_DISABLED": "true",
            # Only what every function has: each invocation adds its own environment.
            **self.pipeline.shared_environment(),
            **self._overrides,
        }

    def _reset_pipeline_caches(self) -> None:
        from kpi_pipeline import aws, settings

        aws.reset_clients()
        settings.clear_cache()

    def _route_logs(self) -> None:
        """Send the handlers' structured logs where CloudWatch would have them."""
        from kpi_pipeline.observability import logger

        handler = logger.registered_handler
        if self._log_stream is not None and hasattr(handler, "setStream"):
            previous = handler.setStream(self._log_stream)
            self._stack.callback(handler.setStream, previous or sys.stdout)

    def _quiet_moto(self) -> None:
        """moto logs every Fail state as an exception; the run's own report says it better."""
        moto_logger = logging.getLogger("moto")
        self._stack.callback(moto_logger.setLevel, moto_logger.level)
        moto_logger.setLevel(logging.CRITICAL)

    def _create_resources(self) -> None:
        s3 = self.client("s3")
        landing = self.pipeline.outputs.get("LandingBucketName")
        existing = [landing] if landing and landing not in self.pipeline.buckets else []
        for bucket in [*self.pipeline.buckets, *existing]:  # an existing landing bucket too
            s3.create_bucket(Bucket=bucket)
        for bucket, key in self.pipeline.bucket_keys.items():
            s3.put_bucket_encryption(
                Bucket=bucket,
                ServerSideEncryptionConfiguration={
                    "Rules": [
                        {
                            "ApplyServerSideEncryptionByDefault": {
                                "SSEAlgorithm": "aws:kms",
                                "KMSMasterKeyID": key,
                            },
                            "BucketKeyEnabled": True,
                        }
                    ]
                },
            )
        dynamodb = self.client("dynamodb")
        for name, schema in self.pipeline.tables.items():
            dynamodb.create_table(TableName=name, BillingMode="PAY_PER_REQUEST", **schema)
        secrets = self.client("secretsmanager")
        for name, value in self._secrets.items():
            secrets.create_secret(Name=name, SecretString=json.dumps(value))

        iam = self.client("iam")
        role = iam.create_role(
            RoleName="local-pipeline-role",
            AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}),
        )["Role"]["Arn"]
        lam = self.client("lambda")
        for function in self.pipeline.functions:
            lam.create_function(
                FunctionName=function.name,
                Runtime="python3.12",
                Role=role,
                Handler=function.handler,
                Code={"ZipFile": _placeholder_zip()},
                MemorySize=function.memory_mb,
                Timeout=function.timeout_seconds,
            )
            self._handlers[function.name] = (function, self._lazy_handler(function))

        sns = self.client("sns")
        sqs = self.client("sqs")
        self.alert_queue_url = sqs.create_queue(QueueName="local-alerts")["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(
            QueueUrl=self.alert_queue_url, AttributeNames=["QueueArn"]
        )["Attributes"]["QueueArn"]
        for topic_arn in self.pipeline.topic_arns:
            sns.create_topic(Name=topic_arn.rsplit(":", 1)[-1])
            sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn)
        # An API destination (PagerDuty) stands here as a queue its rule sends to: the events
        # the alert function puts on the bus reach it only if they match the synthesized rule.
        events = self.client("events")
        for number, (pattern, input_path) in enumerate(self.pipeline.api_destination_rules):
            url = sqs.create_queue(QueueName=f"local-api-destination-{number}")["QueueUrl"]
            arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
            events.put_rule(
                Name=f"local-api-destination-{number}", EventPattern=json.dumps(pattern)
            )
            events.put_targets(
                Rule=f"local-api-destination-{number}",
                Targets=[{"Id": "destination", "Arn": arn["Attributes"]["QueueArn"]}],
            )
            self.api_destination_queues.append((url, input_path))

        self.state_machine_arn = self.client("stepfunctions").create_state_machine(
            name=self.pipeline.state_machine_name,
            definition=json.dumps(self.pipeline.definition),
            roleArn=role,
        )["stateMachineArn"]

    # --- Lambda ------------------------------------------------------------------------------
    def _lazy_handler(self, function: LocalFunction) -> Callable[..., Any]:
        module_name, attribute = function.handler.rsplit(".", 1)
        resolved: list[Callable[..., Any]] = []

        def call(event: Any, context: Any) -> Any:
            if not resolved:
                with self._import_lock:
                    if not resolved:
                        resolved.append(getattr(importlib.import_module(module_name), attribute))
            return resolved[0](event, context)

        return call

    def _invoke(self, function_name: str, body: Any, response_headers: dict[str, str]) -> bytes:
        """One Lambda invocation, in a thread of its own: when its execution is stopped
        (:meth:`stop`), Step Functions is answered at once and the invocation goes on, as in
        AWS, until it returns (a zombie: see :meth:`await_zombies`)."""
        name = (
            function_name.rsplit(":", 1)[-1] if function_name.startswith("arn:") else function_name
        )
        function, handler = self._handlers[name]
        event = json.loads(body) if body else {}
        run = str(event.get("run_id") or "") if isinstance(event, dict) else ""
        lock = event.get("lock") if isinstance(event, dict) else None
        if run in self._redriven and isinstance(lock, dict):
            # A redriven execution keeps its ARN in AWS: so does the token it carries.
            lock["execution"] = self._redriven[run]
        answer: dict[str, Any] = {}
        done = threading.Event()

        def work() -> None:
            run_token = current_run.set(run or None)
            try:
                answer.update(self._call_handler(function, handler, event))
            finally:
                current_run.reset(run_token)
                done.set()

        worker = threading.Thread(
            target=contextvars.copy_context().run, args=(work,), name=f"{name}:{run}", daemon=True
        )
        worker.start()
        while not done.wait(0.02):
            if run and run in self._stopped_runs:
                with self._zombie_lock:
                    self.zombies.append(worker)
                # Whatever Step Functions is answered, the stopped execution goes no further.
                return b"{}"
        if answer.get("failed"):
            response_headers["x-amz-function-error"] = "Unhandled"
        return bytes(answer["body"])

    def _call_handler(
        self, function: LocalFunction, handler: Callable[..., Any], event: Any
    ) -> dict[str, Any]:
        context = LambdaContext(
            function_name=function.name,
            invoked_function_arn=function.arn,
            memory_limit_in_mb=function.memory_mb,
            timeout_seconds=function.timeout_seconds,
        )
        from kpi_pipeline.settings import invocation_environment

        calling = _calling_function.set(function_access_key(function))
        variables = self._invocation_environment(function, context)
        try:
            with invocation_environment(variables):
                return {"body": json.dumps(handler(event, context)).encode()}
        except LambdaKilled as killed:
            # What Lambda returns for an invocation that timed out, its work half done.
            body = {
                "errorType": "Sandbox.Timedout",
                "errorMessage": f"Task timed out after {function.timeout_seconds}.00 "
                f"seconds ({killed})",
            }
            return {"body": json.dumps(body).encode(), "failed": True}
        except LambdaOutOfMemory as killed:
            body = {
                "errorType": killed.error_type,
                "errorMessage": f"RequestId: {context.aws_request_id} Error: Runtime exited "
                "with error: signal: killed",
            }
            return {"body": json.dumps(body).encode(), "failed": True}
        except Exception as exc:
            self.failures.append((function.name, type(exc).__name__, traceback.format_exc()))
            # What the Lambda service returns for an unhandled error: Step Functions
            # matches Retry and Catch on errorType, the exception's class name.
            error: dict[str, Any] = {
                "errorType": type(exc).__name__,
                "errorMessage": str(exc),
                "stackTrace": traceback.format_tb(exc.__traceback__)[-5:],
            }
            return {"body": json.dumps(error).encode(), "failed": True}
        finally:
            _calling_function.reset(calling)
            if "WORK_DIR" in variables and "WORK_DIR" in self._overrides:
                shutil.rmtree(variables["WORK_DIR"], ignore_errors=True)  # the environment ends

    # --- executions that end while their work goes on ------------------------------------------

    def stop(self, execution_arn: str, cause: str = "stopped by an operator") -> None:
        """StopExecution as AWS does it: the execution ends ABORTED at once, and whatever
        Lambda invocation (or warehouse batch) it had in flight goes on as a zombie."""
        # Stopped first: the invocation answered next must find its execution ended.
        self.client("stepfunctions").stop_execution(executionArn=execution_arn, cause=cause)
        self._stop_causes[execution_arn] = cause  # AWS keeps it (moto 5.2.5 drops it)
        self._stopped_runs.add(execution_arn.rsplit(":", 1)[-1])

    def await_zombies(self) -> None:
        """What the lock's take-over waits for (WaitOutHolderFunctions): every Lambda
        invocation of an ended execution is over once the longest function timeout has
        passed. A zombie held before a warehouse commit stands for a Data API batch, which
        Lambda's timeout does not end: it stays held (the warehouse's fence is its guard)."""
        self.side_effects.release_held(lambda park: park.before.action != "commit")
        with self._zombie_lock:
            zombies = list(self.zombies)
        for zombie in zombies:
            if not self.side_effects.holds(zombie.ident):
                zombie.join(timeout=300)

    def redrive(self, execution: Execution) -> str:
        """RedriveExecution, which moto lacks, as AWS documents it: the execution runs again
        from the state it failed (or was stopped) in, with that state's input; the states
        before it (the lock's included) do not run again. Returns the redriven execution's
        ARN (here a new one, of a copy of the state machine starting at that state; the
        lock token the steps carry names the original, as in AWS)."""
        top = self.pipeline.definition["States"]
        entered = [
            e["stateEnteredEventDetails"]
            for e in execution.history
            if "stateEnteredEventDetails" in e and e["stateEnteredEventDetails"]["name"] in top
        ]
        failed = execution.failed_state
        state = next(
            (d for d in reversed(entered) if failed is None or d["name"] == failed), entered[-1]
        )
        copy = {**self.pipeline.definition, "StartAt": state["name"]}
        sfn = self.client("stepfunctions")
        self._redrives += 1
        machine = sfn.create_state_machine(
            name=f"{self.pipeline.state_machine_name}-redrive-{self._redrives}",
            definition=json.dumps(copy),
            roleArn=sfn.describe_state_machine(stateMachineArn=self.state_machine_arn)["roleArn"],
        )["stateMachineArn"]
        self._redriven[execution.run_id] = execution.arn
        self._stopped_runs.discard(execution.run_id)  # the redriven execution runs
        return str(
            sfn.start_execution(
                stateMachineArn=machine, name=execution.run_id, input=state["input"]
            )["executionArn"]
        )

    def invoke_handler(self, handler_suffix: str, event: dict[str, Any]) -> dict[str, Any]:
        """Call a function's handler as its Lambda would be (its credentials, its context)."""
        (name,) = [n for n, (f, _) in self._handlers.items() if f.handler.endswith(handler_suffix)]
        headers: dict[str, str] = {}
        response = json.loads(self._invoke(name, json.dumps(event), headers))
        if headers:
            raise RuntimeError(f"{handler_suffix} failed: {response}")
        return dict(response)

    def _step_of(self, client: Any) -> str | None:
        """The function whose credentials a client signs with (None: anyone else)."""
        credentials = client._request_signer._credentials
        principal = self.iam.principal_for(credentials.access_key if credentials else None)
        if principal is None or principal.name in {"StateMachine", "RedshiftCopyRole"}:
            return None
        return principal.name

    def _invocation_environment(
        self, function: LocalFunction, context: LambdaContext
    ) -> dict[str, str]:
        """What the function's own process would see: its environment as synthesized, what
        the Lambda runtime sets, and the runner's overrides; a /tmp of its own."""
        variables = {
            **function.environment,
            "AWS_LAMBDA_FUNCTION_NAME": function.name,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(function.memory_mb),
            **self._overrides,
        }
        if variables.get("WAREHOUSE_KIND") == "postgres" and "WAREHOUSE_DSN" in variables:
            # As Redshift Serverless signs the Data API in: the function's IAM role is its
            # database user, with only what the warehouse setup grants it.
            variables["WAREHOUSE_DSN"] = dsn_as(
                variables["WAREHOUSE_DSN"], f"IAMR:{function.role_name}"
            )
        work_root = variables.get("WORK_DIR")
        if work_root:  # each invocation its own /tmp, as each Lambda environment has
            variables["WORK_DIR"] = str(Path(work_root) / function.name / context.aws_request_id)
        return variables

    # --- running -----------------------------------------------------------------------------
    def client(self, service: str) -> Any:
        """A client of the test's own credentials (kept for the process, as the others)."""
        with _CLIENTS_LOCK:
            if service not in _OWN_CLIENTS:
                _OWN_CLIENTS[service] = _shared_session().client(service, region_name=REGION)
            return _OWN_CLIENTS[service]

    def start(self, run_id: str, run_input: dict[str, Any] | None = None) -> str:
        return str(
            self.client("stepfunctions").start_execution(
                stateMachineArn=self.state_machine_arn,
                name=run_id,
                input=json.dumps(run_input or {}),
            )["executionArn"]
        )

    def wait(
        self,
        execution_arn: str,
        *,
        on_event: Callable[[dict[str, Any]], None] | None = None,
        on_poll: Callable[[], None] | None = None,
        timeout_seconds: float = 3600,
    ) -> Execution:
        """Follow the execution to its end; ``on_event`` gets each history event once,
        ``on_poll`` is called at each poll, before the events it brings (the progress of a
        Distributed Map, whose iterations are not in the history)."""
        sfn = self.client("stepfunctions")
        seen = 0
        deadline = time.monotonic() + timeout_seconds
        while True:
            if on_poll:
                on_poll()
            description = sfn.describe_execution(executionArn=execution_arn)
            ended = description["status"] in TERMINAL
            if on_event or ended:  # the whole history each time: only to report progress
                history = self._history(execution_arn)
                if on_event:
                    for event in history[seen:]:
                        on_event(event)
                seen = len(history)
            if ended:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"execution {execution_arn} still running")
            time.sleep(0.1 if on_event else 0.05)
        output = description.get("output")
        self._tell_alert_function(description)
        return Execution(
            run_id=description["name"],
            arn=execution_arn,
            status=description["status"],
            output=json.loads(output) if output else None,
            error=description.get("error"),
            cause=description.get("cause"),
            history=history,
        )

    def finished(self, execution_arn: str) -> bool:
        status = self.client("stepfunctions").describe_execution(executionArn=execution_arn)
        return status["status"] in TERMINAL

    def run(self, run_id: str, run_input: dict[str, Any] | None = None, **kwargs: Any) -> Execution:
        return self.wait(self.start(run_id, run_input), **kwargs)

    def _history(self, execution_arn: str) -> list[dict[str, Any]]:
        sfn = self.client("stepfunctions")
        events: list[dict[str, Any]] = []
        token = None
        while True:
            page = sfn.get_execution_history(
                executionArn=execution_arn,
                maxResults=1000,
                **({"nextToken": token} if token else {}),
            )
            events.extend(page["events"])
            token = page.get("nextToken")
            if not token:
                return events

    # --- alerts ------------------------------------------------------------------------------
    def _alert_function(self) -> str | None:
        names = [n for n, (f, _) in self._handlers.items() if f.handler == ALERT_HANDLER]
        return names[0] if names else None

    def _tell_alert_function(self, description: dict[str, Any]) -> None:
        """What EventBridge does in AWS when an execution ends (infra/alerts.py's rule):
        hand the alert function the "Execution Status Change" event, once per execution."""
        arn, machine = description["executionArn"], description["stateMachineArn"]
        if self._alert_function() is None or arn in self._told:
            return
        self._told.add(arn)
        if machine != self.state_machine_arn and description["name"] in self._redriven:
            # A redriven execution is the same execution in AWS (its ARN, its state machine);
            # here it ran on a copy (redrive), whose history the alert function reads as the
            # original's (moto keeps the redrive's events apart: its failed state may be the
            # first attempt's).
            arn, machine = self._redriven[description["name"]], self.state_machine_arn
        detail = {
            "executionArn": arn,
            "stateMachineArn": machine,
            "name": description["name"],
            "status": description["status"],
            "startDate": _epoch_ms(description.get("startDate")),
            "stopDate": _epoch_ms(description.get("stopDate")),
            "input": description.get("input"),
            "output": description.get("output"),
            "error": description.get("error") or None,
            "cause": description.get("cause") or self._stop_causes.get(arn),
        }
        self.deliver(
            {
                "version": "0",
                "detail-type": "Step Functions Execution Status Change",
                "source": "aws.states",
                "account": ACCOUNT,
                "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "region": REGION,
                "resources": [arn],
                "detail": detail,
            }
        )

    def deliver(self, event: dict[str, Any]) -> dict[str, Any]:
        """Invoke the alert function with an EventBridge event, as its rules would."""
        return self.invoke_handler(ALERT_HANDLER, event)

    def alarm_changed(
        self, alarm_name: str, description: str, reason: str, state: str = "ALARM"
    ) -> dict[str, Any]:
        """What CloudWatch hands EventBridge when an alarm changes state (the alarms no run
        is behind reach the alert function: infra/alerts.py)."""
        return self.deliver(
            {
                "version": "0",
                "detail-type": "CloudWatch Alarm State Change",
                "source": "aws.cloudwatch",
                "account": ACCOUNT,
                "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "region": REGION,
                "resources": [f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:{alarm_name}"],
                "detail": {
                    "alarmName": alarm_name,
                    "state": {"value": state, "reason": reason},
                    "previousState": {"value": "OK" if state == "ALARM" else "ALARM"},
                    "configuration": {"description": description},
                },
            }
        )

    def log_group_of(self, state: str) -> str:
        """The log group an alert about ``state`` links to."""
        name = self._alert_function()
        assert name is not None, "the pipeline has no alert function"
        function, _ = self._handlers[name]
        return str(json.loads(function.environment["ALERT_LOG_GROUPS"])[state])

    def alerts(self) -> list[dict[str, Any]]:
        """Alerts published to the topic since the last call (received through an SQS
        queue, which gets what AWS Chatbot gets): each with its subject, its text (Chatbot's
        title and description), the e-mail's text and the alert's facts."""
        alerts = []
        for envelope in self._drain(self.alert_queue_url):
            notification = json.loads(envelope["Message"])  # what AWS Chatbot receives
            content = notification["content"]
            alerts.append(
                {
                    "subject": envelope.get("Subject"),
                    "text": f"{content['title']}\n{content['description']}",
                    "email": self._email_of(envelope["MessageId"]),
                    **notification["metadata"]["additionalContext"],
                }
            )
        return alerts

    def _email_of(self, message_id: str) -> str | None:
        """What an e-mail subscriber receives of a message: its "email" part when it was
        published with MessageStructure json (moto keeps what was published)."""
        from moto.sns.models import sns_backends

        for topic in sns_backends[ACCOUNT][REGION].topics.values():
            for sent_id, message, *_ in topic.sent_notifications:
                if sent_id == message_id:
                    try:
                        structured = json.loads(message)
                    except ValueError:
                        return str(message)
                    if isinstance(structured, dict) and "email" in structured:
                        return str(structured["email"])
                    return str(message)
        return None

    def pagerduty_events(self) -> list[dict[str, Any]]:
        """The events the API destinations (PagerDuty) received since the last call: the
        part of each event their rule sends (InputPath), as the HTTP body."""
        events = []
        for url, input_path in self.api_destination_queues:
            for event in self._drain(url, envelope=False):
                body = event
                for part in input_path.removeprefix("$").strip(".").split("."):
                    body = body[part] if part else body
                events.append(body)
        return events

    def _drain(self, queue_url: str, *, envelope: bool = True) -> list[dict[str, Any]]:
        sqs = self.client("sqs")
        bodies: list[dict[str, Any]] = []
        while True:
            batch = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)
            if not batch.get("Messages"):
                return bodies
            for message in batch["Messages"]:
                bodies.append(json.loads(message["Body"]))
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])

    def read_json(self, bucket: str, key: str) -> Any | None:
        """An object's JSON content, or None when there is no such object."""
        try:
            body = self.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
        except self.client("s3").exceptions.NoSuchKey:
            return None
        return json.loads(body)

    # --- S3 state --------------------------------------------------------------------------------
    def put_files(self, bucket: str, prefix: str, files: list[Path]) -> list[str]:
        s3 = self.client("s3")
        keys = []
        for path in files:
            key = f"{prefix}{path.name}"
            s3.upload_file(str(path), bucket, key)
            keys.append(key)
        return keys

    def load_buckets(self, folder: Path) -> int:
        """Restore the objects saved by :meth:`save_buckets` (a previous run's S3)."""
        s3 = self.client("s3")
        restored = 0
        for bucket in self.pipeline.buckets:
            root = folder / bucket
            if not root.is_dir():
                continue
            for path in sorted(p for p in root.rglob("*") if p.is_file()):
                s3.upload_file(str(path), bucket, path.relative_to(root).as_posix())
                restored += 1
        return restored

    def save_buckets(self, folder: Path) -> int:
        """Write every object of every bucket under ``folder/<bucket>/<key>`` (a new folder:
        local_runner.state makes it current once it is whole)."""
        s3 = self.client("s3")
        saved = 0
        for bucket in self.pipeline.buckets:
            paginator = s3.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=bucket):
                for item in page.get("Contents", []):
                    if item["Key"].endswith("/"):
                        continue
                    target = folder / bucket / item["Key"]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    s3.download_file(bucket, item["Key"], str(target))
                    saved += 1
        folder.mkdir(parents=True, exist_ok=True)
        return saved


ALERT_HANDLER = "alert.handler.handler"


def _epoch_ms(moment: Any) -> int | None:
    """A time as an EventBridge event of Step Functions carries it: epoch milliseconds."""
    if moment is None:
        return None
    if isinstance(moment, dt.datetime):
        return int(_aware(moment).timestamp() * 1000)
    return int(dt.datetime.fromisoformat(str(moment)).timestamp() * 1000)


def function_access_key(function: LocalFunction) -> str:
    return f"LOCAL{function.logical_id.upper()}"


def iam_check(pipeline: LocalPipeline) -> IamCheck:
    """Who signs with which access key, and the statements each may rely on."""
    policies = pipeline.policies
    principals = {
        function_access_key(f): Principal(_readable(f.logical_id), policies.get(f.role, ()))
        for f in pipeline.functions
    }
    principals[STATE_MACHINE_ACCESS_KEY] = Principal(
        "StateMachine", policies.get(pipeline.state_machine_role, ())
    )
    copy_role = pipeline.environment().get("REDSHIFT_COPY_ROLE_ARN")
    if copy_role:
        principals[COPY_ROLE_ACCESS_KEY] = Principal(
            "RedshiftCopyRole", policies.get(copy_role.rsplit("/", 1)[-1], ())
        )
    return IamCheck(
        principals,
        REGION,
        ACCOUNT,
        bucket_keys=dict(pipeline.bucket_keys),
        topic_keys=dict(pipeline.topic_keys),
    )


def _readable(logical_id: str) -> str:
    """``FunctionsIngestFileFunction371EDBA6`` -> ``IngestFile``."""
    return logical_id.removeprefix("Functions").rsplit("Function", 1)[0] or logical_id


# Clients signing as each principal, kept for the process: a client holds no state of moto's
# (that is in its backends), and creating one costs more than most calls it makes.
_PRINCIPAL_CLIENTS: dict[tuple[str, str], Any] = {}
_OWN_CLIENTS: dict[str, Any] = {}  # LocalAws.client: the test's (or make run's) own
_CLIENTS_LOCK = threading.Lock()  # guards both client caches and their one session
_SESSION: list[boto3.session.Session] = []


def _shared_session() -> boto3.session.Session:
    """One session for the clients made here, so that each service's model loads once
    (sessions are not thread-safe: callers hold _CLIENTS_LOCK)."""
    if not _SESSION:
        _SESSION.append(boto3.session.Session())
    return _SESSION[0]


@contextlib.contextmanager
def _credentials_per_principal(check: IamCheck) -> Iterator[None]:
    """Give each function, and the COPY role, clients that sign with its own access key.

    In AWS every function runs with its own role's credentials; here they share a process,
    so the pipeline's client factory hands out clients keyed by the function whose handler
    is running (and, for Redshift's COPY, by the role it acts as).
    """
    from kpi_pipeline import aws

    original = aws.client
    clients = _PRINCIPAL_CLIENTS
    lock = _CLIENTS_LOCK

    def client(service: str, *, role_arn: str | None = None) -> Any:
        key = COPY_ROLE_ACCESS_KEY if role_arn else _calling_function.get()
        if key is None or check.principal_for(key) is None:
            return original(service, role_arn=role_arn) if role_arn else original(service)
        with lock:
            if (service, key) not in clients:
                clients[(service, key)] = _shared_session().client(
                    service,
                    region_name=REGION,
                    aws_access_key_id=key,
                    aws_secret_access_key="local",  # noqa: S106 - moto's, not a secret
                    config=aws.CLIENT_CONFIG,
                )
            return clients[(service, key)]

    aws.client = client
    try:
        yield
    finally:
        aws.client = original


# moto's state machine interpreter asks for a boto3 client for every task it runs; kept for
# the process, by what the client is made of (a Config by its options, not its identity).
_INTERPRETER_CLIENTS: dict[tuple[Any, ...], Any] = {}
_VALID_DEFINITIONS: set[str] = set()  # state machine definitions moto validated already


def _client_key(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    def spelled(value: Any) -> Any:
        if isinstance(value, Config):
            return repr(sorted(value._user_provided_options.items()))
        return repr(value)

    return (args, tuple(sorted((k, spelled(v)) for k, v in kwargs.items())))


@contextlib.contextmanager
def _quicker_moto() -> Iterator[None]:
    """Two per-request costs of moto that a run of a thousand files pays a thousand times:
    every request rebuilds the backend's URL table (S3's by reloading a module), and the
    state machine interpreter creates a new boto3 client for every task. Both are cached;
    neither changes what a call does."""
    from moto.core.base_backend import BaseBackend

    urls_property = BaseBackend.urls
    url_tables: dict[type, Any] = {}

    def urls(self: Any) -> Any:
        kind = type(self)
        if kind not in url_tables:
            url_tables[kind] = urls_property.fget(self)  # type: ignore[attr-defined]
        return url_tables[kind]

    from moto.stepfunctions.parser.asl.utils import boto_client

    real_boto3 = boto_client.boto3

    def client(*args: Any, **kwargs: Any) -> Any:
        key = _client_key(args, kwargs)
        with _CLIENTS_LOCK:
            if key not in _INTERPRETER_CLIENTS:
                _INTERPRETER_CLIENTS[key] = _shared_session().client(*args, **kwargs)
            return _INTERPRETER_CLIENTS[key]

    # CreateStateMachine parses the definition to validate it: once per definition will do.
    from moto.stepfunctions.parser.models import StepFunctionsParserBackend

    validate = StepFunctionsParserBackend._validate_definition

    def validate_once(definition: str) -> None:
        if definition not in _VALID_DEFINITIONS:
            validate(definition)
            _VALID_DEFINITIONS.add(definition)

    BaseBackend.urls = property(urls)  # type: ignore[method-assign,assignment]
    boto_client.boto3 = SimpleNamespace(client=client)
    StepFunctionsParserBackend._validate_definition = staticmethod(validate_once)  # type: ignore[method-assign]
    try:
        yield
    finally:
        BaseBackend.urls = urls_property  # type: ignore[method-assign]
        boto_client.boto3 = real_boto3
        StepFunctionsParserBackend._validate_definition = staticmethod(validate)  # type: ignore[method-assign]


@contextlib.contextmanager
def _grace_waits_for(await_zombies: Callable[[], None]) -> Iterator[None]:
    """The Wait state (WaitOutHolderFunctions: the longest function timeout) as what it
    stands for, without sleeping: until every zombie Lambda invocation is over."""
    from moto.stepfunctions.parser.asl.component.state.wait.wait_function import wait_function

    original = wait_function.WaitFunction._wait_interval

    def wait(self: Any, env: Any, wait_seconds: int) -> None:
        await_zombies()

    wait_function.WaitFunction._wait_interval = wait  # type: ignore[method-assign]
    try:
        yield
    finally:
        wait_function.WaitFunction._wait_interval = original  # type: ignore[method-assign]


@contextlib.contextmanager
def _patched_environ(values: dict[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.update(values)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@contextlib.contextmanager
def _patched_invoke(invoke: Callable[[str, Any, dict[str, str]], bytes]) -> Iterator[None]:
    """Route moto's Lambda invocations to in-process handlers (moto is pinned for this)."""
    original = LambdaSimpleBackend.invoke

    def patched(
        backend: Any,
        function_name: str,
        qualifier: Any,
        body: Any,
        headers: Any,
        response_headers: Any,
    ) -> bytes:
        return invoke(function_name, body, response_headers)

    LambdaSimpleBackend.invoke = patched  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        LambdaSimpleBackend.invoke = original  # type: ignore[method-assign]


@contextlib.contextmanager
def _sdk_integration_casing() -> Iterator[None]:
    """Give moto's AWS SDK integrations the casing Step Functions uses.

    Step Functions takes SDK parameters in PascalCase and returns PascalCase fields, whatever
    the API's own casing; moto passes them to boto3 as written, which breaks APIs whose
    members are camelCase (Step Functions' own ListExecutions: ``stateMachineArn``).
    """
    from botocore.session import get_session
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import (
        state_task_service_aws_sdk as sdk,
    )

    task = sdk.StateTaskServiceAwsSdk
    original = (task._normalise_parameters, task._normalise_response)
    session = get_session()

    def parameters(self: Any, params: dict[str, Any], *args: Any, **kwargs: Any) -> None:
        service = session.get_service_model(self._get_boto_service_name())
        action = self._get_boto_service_action()
        operation = next(name for name in service.operation_names if _snake(name) == action)
        members = service.operation_model(operation).input_shape.members
        by_lower = {name.lower(): name for name in members}
        for key in list(params):
            params[by_lower.get(key.lower(), key)] = params.pop(key)

    def response(self: Any, value: Any, *args: Any, **kwargs: Any) -> None:
        if isinstance(value, dict):
            for key in list(value):
                value[key[:1].upper() + key[1:]] = value.pop(key)
            for item in value.values():
                response(self, item)
        elif isinstance(value, list):
            for item in value:
                response(self, item)

    task._normalise_parameters = parameters  # type: ignore[method-assign,assignment]
    task._normalise_response = response  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        task._normalise_parameters, task._normalise_response = original  # type: ignore[method-assign]


@contextlib.contextmanager
def _atomic_object_operations() -> Iterator[None]:
    """Make each of moto's S3 object operations atomic, as S3's are.

    moto checks If-None-Match and then writes, so two parallel Map iterations could both
    win one conditional write; and two writes of one key at once (two ingests of the same
    content pinning the same snapshot copy) close the buffer the other is still reading
    ("I/O operation on closed file"). S3 serializes both; here one lock does.
    """
    from moto.s3.responses import S3Response

    original = S3Response._key_response
    lock = threading.RLock()

    def key_response(self: Any, *args: Any, **kwargs: Any) -> Any:
        with lock:
            return original(self, *args, **kwargs)

    S3Response._key_response = key_response  # type: ignore[method-assign]
    try:
        yield
    finally:
        S3Response._key_response = original  # type: ignore[method-assign]


@contextlib.contextmanager
def _eventually_consistent_listing(lag_seconds: float) -> Iterator[None]:
    """ListExecutions as AWS documents it: eventually consistent. An execution started in the
    last ``lag_seconds`` may be missing from the list (here: is), so nothing may rely on it
    to tell whether another run is going on."""
    from moto.stepfunctions.models import StepFunctionBackend

    original = StepFunctionBackend.list_executions

    def list_executions(self: Any, *args: Any, **kwargs: Any) -> Any:
        horizon = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=lag_seconds)
        executions, next_token = original(self, *args, **kwargs)  # moto paginates
        visible = [e for e in executions if _aware(e.start_date) <= horizon]
        return visible, next_token

    StepFunctionBackend.list_executions = list_executions  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        StepFunctionBackend.list_executions = original  # type: ignore[method-assign]


def _aware(moment: dt.datetime) -> dt.datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


def _placeholder_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("README.txt", "The local runner calls the handler in-process.")
    return buffer.getvalue()
