"""The Step Functions definition: one state machine, used in AWS and by the local runner.

States pass references and counts only (the state payload limit is 256 KiB). Every task
retries transient errors with backoff and jitter, and hands any other error to a
``<State>Failed`` pass that names the failed state, then to a Fail: the execution's end
reaches the alert function through EventBridge (infra/alerts.py), which tells everyone.
"""

from __future__ import annotations

from aws_cdk import ArnFormat, Aws, Duration, Stack
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from infra.steps import (
    ALERT,
    ARCHIVE,
    CHECK_REQUEST,
    CHECK_SOURCE,
    EXTRACT_RDS,
    INGEST_FILE,
    LIST_FILES,
    LOAD,
    PLAN_TRANSFORM,
    REPLAY_QUARANTINE,
    TRANSFORM,
    TRANSFORM_IN_WAREHOUSE,
    Step,
)
from kpi_pipeline.alerts import console_domain
from kpi_pipeline.errors import (
    LAMBDA_SERVICE_ERRORS,
    MAYBE_OUT_OF_MEMORY_ERRORS,
    OUT_OF_MEMORY_ERRORS,
    RETRYABLE_ERRORS,
    PlanOutdated,
)
from kpi_pipeline.layout import Layout
from kpi_pipeline.metric_names import NAMESPACE, PLAYS_LOADED, RUNS_ENDED, SERVICE

# Lambda service hiccups, plus the errors our code raises for transient trouble.
TRANSIENT_ERRORS = [
    # (Lambda.ClientExecutionTimeoutException: the call timed out on Step Functions' side and
    # the function may still run; every step is idempotent, so trying again is safe)
    *LAMBDA_SERVICE_ERRORS,
    *(error.__name__ for error in RETRYABLE_ERRORS),
]
LAMBDA_TIMED_OUT = "Sandbox.Timedout"  # the error of a Lambda invocation that timed out
RUN_ID = "$.run.run_id"
LOCK_ID = "pipeline"  # one lock item: one run at a time per environment
DYNAMODB_TRANSIENT_ERRORS = [
    "DynamoDB.ProvisionedThroughputExceededException",
    "DynamoDB.ThrottlingException",
    "DynamoDB.RequestLimitExceeded",
    "DynamoDB.InternalServerErrorException",
]
LOCK_TAKEN = "DynamoDB.ConditionalCheckFailedException"
SNAPSHOT = {"users_key.$": "$.snapshot.users_key", "songs_key.$": "$.snapshot.songs_key"}
# The lock this execution holds, with its fencing token: every step that writes shared state
# checks it is still the holder's before it writes (a redriven or stopped execution is not).
LOCK = {"execution.$": "$$.Execution.Id", "fence.$": "$.lock_token.fence"}


class PipelineDefinition(Construct):
    """Builds the chain of states; ``definition`` is what the state machine runs."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        functions: dict[str, lambda_.IFunction],
        data_bucket: s3.IBucket,
        lock_table: dynamodb.ITable,
        map_results_prefix: str,
        transform_map_results_prefix: str,
        pipeline_name: str,
        ingest_concurrency: int,
        transform_concurrency: int,
        takeover_grace_seconds: int,
    ) -> None:
        super().__init__(scope, construct_id)
        self._functions = functions
        self._lock_table = lock_table
        self._data_bucket = data_bucket
        self._pipeline_name = pipeline_name
        region = Stack.of(self).region

        failure = sfn.Pass(
            self,
            "DescribeFailure",
            comment="Describes the failure: run, failed state, error, cause, console link",
            parameters={
                "status": "failed",
                "pipeline": pipeline_name,
                "run_id.$": RUN_ID,
                "failed_state.$": "$.failure.state",
                "error.$": "$.failure.error.Error",
                "cause.$": "$.failure.error.Cause",
                "execution_arn.$": "$$.Execution.Id",
                "started_at.$": "$.run.started_at",
                "finished_at.$": "$$.State.EnteredTime",
                "console_url.$": (
                    f"States.Format('https://{region}.{console_domain(region)}/states/home"
                    f"?region={region}#/v2/executions/details/{{}}', $$.Execution.Id)"
                ),
            },
            result_path="$.alert",
        )
        # The execution ends FAILED with the error and cause of the state that raised; its
        # end reaches the alert function (EventBridge), which reads the failed state here.
        fail = sfn.Fail(
            self,
            "RunFailed",
            error_path="$.alert.error",
            cause_path="$.alert.cause",
        )
        # Every end is counted by its status (a run that ends no_new_files day after day is
        # a dead feed), releases the lock (unless it never held it), then completes.
        record_failure = self._record_outcome("RecordFailedRun", fail, status="failed")
        self._on_failure = failure.next(
            self._release_lock("ReleaseLockAfterFailure", record_failure)
        )
        self._release = self._record_outcome(
            "RecordRunOutcome",
            self._release_lock("ReleaseLock", sfn.Succeed(self, "RunComplete")),
        )

        start = sfn.Pass(
            self,
            "StartRun",
            comment="The execution name is the run id: every object a run writes lives under it",
            parameters={
                "run_id.$": "$$.Execution.Name",
                # when this first state was entered: the execution's start. (Not
                # $$.Execution.StartTime: moto holds it as a datetime, which no JSON document
                # of the run, the outcome or the summary, could then carry.)
                "started_at.$": "$$.State.EnteredTime",
            },
            result_path="$.run",
        )

        # What the execution asks for (daily, recompute, replay), checked before anything is
        # touched: a bad request fails here, without the lock.
        check_request = self._task(
            CHECK_REQUEST,
            {"run_id.$": RUN_ID, "execution_input.$": "$$.Execution.Input"},
            "$.request",
        )

        # One execution at a time: a lease in DynamoDB, taken by a conditional write (the
        # Step Functions semaphore pattern). ListExecutions is eventually consistent and
        # cannot exclude anything: two starts a second apart both saw only themselves.
        already_running = self._outcome("AlreadyRunning", "already_running", {}, release=False)
        acquire = self._lock_write(
            "AcquireLock",
            "attribute_not_exists(holder) OR holder = :me",  # a retried acquire is ours
            {":me": sfn.JsonPath.string_at("$$.Execution.Id")},
        )
        read_holder = tasks.DynamoGetItem(
            self,
            "ReadLockHolder",
            comment="Who holds the lock (strongly consistent read)",
            table=lock_table,
            key={"lock_id": tasks.DynamoAttributeValue.from_string(LOCK_ID)},
            consistent_read=True,
            result_path="$.lock",
        )
        _retry_transient(read_holder, DYNAMODB_TRANSIENT_ERRORS)
        self._catch(read_holder, "ReadLockHolder")
        # An execution that ended ABORTED or TIMED_OUT ran no Catch and never released its
        # lease: a holder that is no longer running loses it. DescribeExecution reads one
        # execution; a stale answer can only say RUNNING for one that just ended (the
        # conservative side: this run ends already_running and the next one proceeds).
        check_holder = self._describe_holder("CheckLockHolder", "Is the lock's holder running?")
        take_over = self._lock_write(
            "TakeOverLock",
            "holder = :stale",  # unless someone else took it over first
            {":stale": sfn.JsonPath.string_at("$.lock.Item.holder.S")},
        )
        take_over.add_catch(already_running, errors=[LOCK_TAKEN], result_path="$.lock_error")
        self._catch(take_over, "TakeOverLock")
        acquire.add_catch(read_holder, errors=[LOCK_TAKEN], result_path="$.lock_error")
        self._catch(acquire, "AcquireLock")
        # A stopped or timed-out execution's Lambda invocations go on until their own
        # timeout: the lock is taken over once the longest of them is certainly over, so no
        # function of the old holder writes after the new one started. (Its Data API batches
        # may run longer: the warehouse's fence refuses them, kpi_pipeline.warehouse.) The
        # holder is asked again after the wait: an operator may have redriven it meanwhile.
        wait_out = sfn.Wait(
            self,
            "WaitOutHolderFunctions",
            comment="the ended holder's functions may still write until their timeout",
            time=sfn.WaitTime.duration(Duration.seconds(takeover_grace_seconds)),
        )
        recheck_holder = self._describe_holder(
            "RecheckLockHolder", "Was the holder redriven while we waited?"
        )
        wait_out.next(recheck_holder)
        # A holder that never existed (a lock item written by hand) is waited out too.
        check_holder.add_catch(
            wait_out, errors=["Sfn.ExecutionDoesNotExistException"], result_path="$.holder"
        )
        recheck_holder.add_catch(
            take_over, errors=["Sfn.ExecutionDoesNotExistException"], result_path="$.holder"
        )
        self._catch(check_holder, "CheckLockHolder")
        self._catch(recheck_holder, "RecheckLockHolder")
        # RUNNING, or PENDING_REDRIVE (a redrive was asked and is about to run): not ended.
        still_running = sfn.Condition.or_(
            sfn.Condition.string_equals("$.holder.status", "RUNNING"),
            sfn.Condition.string_equals("$.holder.status", "PENDING_REDRIVE"),
        )
        holder_running = (
            sfn.Choice(self, "HolderStillRunning?")
            .when(still_running, already_running)
            .otherwise(wait_out)
        )
        recheck_holder.next(
            sfn.Choice(self, "HolderBackSinceTheWait?")
            .when(still_running, already_running)
            .otherwise(take_over)
        )
        lock_free = (
            sfn.Choice(self, "LockReleased?", comment="released between the write and the read")
            .when(sfn.Condition.is_not_present("$.lock.Item.holder"), acquire)
            .otherwise(check_holder.next(holder_running))
        )
        read_holder.next(lock_free)

        check_source = self._task(CHECK_SOURCE, {"run_id.$": RUN_ID}, "$.source_check")
        no_rds_data = self._outcome(
            "NoRdsData",
            "no_rds_data",
            {"source_users.$": "$.source_check.users", "source_songs.$": "$.source_check.songs"},
        )
        # The execution's input rides along: {"full_extract": true} reads every table whole.
        extract = self._task(
            EXTRACT_RDS,
            {"run_id.$": RUN_ID, "execution_input.$": "$$.Execution.Input"},
            "$.snapshot",
        )
        list_files = self._task(LIST_FILES, {"run_id.$": RUN_ID}, "$.manifest")
        no_new_files = self._outcome(
            "NoNewFiles",
            "no_new_files",
            {
                "files_deferred.$": "$.manifest.files_deferred",
                "files_ignored.$": "$.manifest.files_ignored",
                "files_unreadable.$": "$.manifest.files_unreadable",
                "files_unreadable_by_reason.$": "$.manifest.files_unreadable_by_reason",
            },
        )

        # A Distributed Map: the file list is read from S3 (a thousand long keys would not
        # fit a state's 256 KiB), each file is a child execution, and the per-file results
        # never come back into the state (IngestFile writes them to S3 itself).
        ingest = _distributed_map(
            self,
            "IngestStreams",
            "One child execution per manifest file: validate, de-duplicate, quarantine",
            data_bucket=data_bucket,
            items_key="$.manifest.files_key",
            item_selector={
                "run_id.$": RUN_ID,
                "file.$": "$$.Map.Item.Value",
                "snapshot": SNAPSHOT,
                "lock": LOCK,
                # where a file's result goes (the run id made safe for S3 keys)
                "results_prefix.$": "$.manifest.results_prefix",
            },
            max_concurrency=ingest_concurrency,
            results_prefix=map_results_prefix,
        )
        ingest_file = self._invoke(
            INGEST_FILE,
            {
                "run_id.$": "$.run_id",
                "file.$": "$.file",
                "snapshot.$": "$.snapshot",
                "lock.$": "$.lock",
            },
            result_path="$",
        )
        # Out of memory, in each form Lambda reports it: once more, in a fresh sandbox (memory
        # a warm one kept can be the cause); a second time, Archive quarantines the file
        # (kpi_pipeline.attempts).
        ingest_file.add_retry(
            errors=[*OUT_OF_MEMORY_ERRORS, *MAYBE_OUT_OF_MEMORY_ERRORS],
            interval=Duration.seconds(1),
            max_attempts=1,
        )
        # A file whose ingestion still fails after the retries must not hold back the others:
        # its failure is recorded as its result, Archive leaves it in landing and fails the
        # run once everything else is loaded.
        describe_failed_file = sfn.Pass(
            self,
            "DescribeFailedFile",
            parameters={
                "index.$": "$.file.index",
                "key.$": "$.file.key",
                "etag.$": "$.file.etag",
                "size.$": "$.file.size",
                "outcome": "failed",
                "reason.$": "$.error.Error",
                "detail.$": "$.error.Cause",
            },
            result_path="$.failed",
        )
        record_failed_file = tasks.CallAwsService(
            self,
            "RecordFailedFile",
            service="s3",
            action="putObject",
            parameters={
                "Bucket": data_bucket.bucket_name,
                "Key.$": "States.Format('{}{}.json', $.results_prefix, $.file.index)",
                "Body.$": "States.JsonToString($.failed)",
                "ContentType": "application/json",
            },
            iam_action="s3:PutObject",
            # where IngestFile writes a file's result (Layout.ingest_result_key)
            iam_resources=[data_bucket.arn_for_objects("runs/*/ingest/*")],
            result_path=sfn.JsonPath.DISCARD,
        )
        _retry_transient(record_failed_file, ["S3.S3Exception", "States.Timeout"])
        ingest_file.add_catch(
            describe_failed_file.next(record_failed_file),
            errors=["States.ALL"],
            result_path="$.error",
        )
        ingest.item_processor(ingest_file)
        self._catch(ingest, "IngestStreams")

        plan = self._task(
            PLAN_TRANSFORM,
            {"run_id.$": RUN_ID, "snapshot": SNAPSHOT, "request.$": "$.request", "lock": LOCK},
            "$.transform",
        )
        # One date per child execution, each within one function's limits: a backlog of any
        # length is read from S3 and computed in parallel. Any date that fails fails the Map
        # (no failure is tolerated), so the load never replaces a date it has no KPIs for.
        transform = _distributed_map(
            self,
            "TransformDates",
            "One child execution per planned date: its KPIs, one part each",
            data_bucket=data_bucket,
            items_key="$.transform.dates_key",
            item_selector={
                "run_id.$": RUN_ID,
                "kpi_date.$": "$$.Map.Item.Value.kpi_date",
                "plan_version.$": "$.transform.plan_version",
                "attempt.$": "$.transform.attempt",
                "engine.$": "$$.Map.Item.Value.engine",
            },
            max_concurrency=transform_concurrency,
            results_prefix=transform_map_results_prefix,
        )
        # Each date goes to the engine PlanTransform chose for it (transform.engine): DuckDB
        # in a Lambda, or SQL inside the warehouse for a day too big for one function.
        date_request: dict[str, object] = {
            "run_id.$": "$.run_id",
            "kpi_date.$": "$.kpi_date",
            "plan_version.$": "$.plan_version",
            "attempt.$": "$.attempt",
        }
        transform.item_processor(
            sfn.Choice(self, "WhichEngine?", comment="PlanTransform's engine for the date")
            .when(
                sfn.Condition.string_equals("$.engine", "warehouse"),
                self._invoke(TRANSFORM_IN_WAREHOUSE, date_request, result_path="$"),
            )
            .otherwise(self._invoke(TRANSFORM, date_request, result_path="$"))
        )
        self._catch(transform, "TransformDates")
        load = self._invoke(
            LOAD,
            {
                "run_id.$": RUN_ID,
                "kpi_prefix.$": "$.transform.kpi_prefix",
                "kpi_dates.$": "$.transform.kpi_dates",
                "plan_version.$": "$.transform.plan_version",
                "attempt.$": "$.transform.attempt",
                "lock": LOCK,
            },
            "$.load",
        )
        # Content was accepted for a planned date after the plan was made: plan again (Load
        # never commits such a plan, and fails a run that had to plan MAX_PLANS times).
        load.add_catch(plan, errors=[PlanOutdated.__name__], result_path="$.replan")
        self._catch(load, LOAD.state)
        skip_load = sfn.Pass(
            self,
            "NothingToLoad",
            comment="No date to recompute: the warehouse stays as it is",
            result=sfn.Result.from_object({"skipped": True}),
            result_path="$.load",
        )
        archive = self._task(
            ARCHIVE,
            {
                "run_id.$": RUN_ID,
                "started_at.$": "$.run.started_at",
                "request.$": "$.request",
                "manifest.$": "$.manifest",
                "source.$": "$.snapshot",
                "transform.$": "$.transform",
                "load.$": "$.load",
                "lock": LOCK,
            },
            "$",  # the run summary becomes the execution's output
        )

        # Assembled from the end, so each Choice reads: condition -> early end, else go on.
        load_and_archive = (
            sfn.Choice(self, "HasDatesToLoad?", comment="a date needs recomputing")
            .when(sfn.Condition.number_equals("$.transform.kpi_date_count", 0), skip_load)
            .otherwise(transform.next(load))
            .afterwards()
            .next(archive)
            .next(self._release)
        )
        plan.next(load_and_archive)
        # A recompute or a replay ingests and archives nothing: Archive finds no manifest.
        no_landing_files = sfn.Pass(
            self,
            "NoLandingFiles",
            comment="A recompute, a replay or a revalidation touches no landing file",
            result=sfn.Result.from_object({"file_count": 0}),
            result_path="$.manifest",
        )
        replay = self._task(
            REPLAY_QUARANTINE,
            {"run_id.$": RUN_ID, "snapshot": SNAPSHOT, "request.$": "$.request", "lock": LOCK},
            "$.replay",
        )
        replay.next(plan)
        no_landing_files.next(
            sfn.Choice(
                self,
                "ReplayFirst?",
                comment="a replay accepts rows (a revalidation moves plays out), then plans",
            )
            .when(
                sfn.Condition.or_(
                    sfn.Condition.string_equals("$.request.kind", "replay_quarantine"),
                    sfn.Condition.string_equals("$.request.kind", "revalidate"),
                ),
                replay,
            )
            .otherwise(plan)
        )
        new_files = (
            sfn.Choice(self, "HasNewFiles?", comment="new files, or accepted data not loaded yet")
            .when(
                sfn.Condition.and_(
                    sfn.Condition.number_equals("$.manifest.file_count", 0),
                    sfn.Condition.number_equals("$.manifest.pending_contents", 0),
                ),
                no_new_files,
            )
            .otherwise(ingest.next(plan))
        )
        which_run = (
            sfn.Choice(self, "WhichRun?", comment="the daily run, or an operator's request")
            .when(
                sfn.Condition.string_equals("$.request.kind", "daily"), list_files.next(new_files)
            )
            .otherwise(no_landing_files)
        )
        source_data = (
            sfn.Choice(self, "HasSourceData?", comment="users and songs both have rows")
            .when(sfn.Condition.boolean_equals("$.source_check.has_data", False), no_rds_data)
            .otherwise(extract.next(which_run))
        )
        acquire.next(check_source)
        take_over.next(check_source)
        check_source.next(source_data)
        preflight = self._preflight()
        self.definition = start.next(check_request).next(
            sfn.Choice(self, "Preflight?", comment="a deployment's checks, or a run")
            .when(sfn.Condition.string_equals("$.request.kind", "preflight"), preflight)
            .otherwise(acquire)
        )

    def _describe_holder(self, name: str, comment: str) -> tasks.CallAwsService:
        """DescribeExecution of the lock's holder: its status in ``$.holder.status``."""
        task = tasks.CallAwsService(
            self,
            name,
            comment=comment,
            service="sfn",
            action="describeExecution",
            parameters={"ExecutionArn.$": "$.lock.Item.holder.S"},
            iam_action="states:DescribeExecution",
            iam_resources=[
                Stack.of(self).format_arn(
                    service="states",
                    resource="execution",
                    resource_name=f"{self._pipeline_name}:*",
                    arn_format=ArnFormat.COLON_RESOURCE_NAME,
                )
            ],
            result_selector={"status.$": "$.Status"},
            result_path="$.holder",
        )
        _retry_transient(task, ["Sfn.SfnException", "Sfn.ThrottlingException"])
        return task

    def _preflight(self) -> sfn.IChainable:
        """{"preflight": true}: each step checks, with its own role, what it will need; the
        alert function publishes a test alert the way every alert goes; Archive gathers the
        checks. No lock is taken and nothing is kept (kpi_pipeline.preflight)."""
        payload: dict[str, object] = {"run_id.$": RUN_ID, "preflight": True}

        def probe(
            step: Step, result_path: str, extra: dict[str, object] | None = None
        ) -> tasks.LambdaInvoke:
            task = tasks.LambdaInvoke(
                self,
                f"Preflight{step.state}",
                lambda_function=self._functions[step.key],
                comment=f"{step.state} checks what it will need",
                payload=sfn.TaskInput.from_object({**payload, **(extra or {})}),
                payload_response_only=True,
                retry_on_service_exceptions=False,
                result_path=result_path,
            )
            _retry_transient(task, TRANSIENT_ERRORS)
            return task

        def branch(*probes: tuple[Step, str]) -> sfn.IChainable:
            """The probes in order; one that fails outright (a timeout, a crash) becomes a
            failed check of its own and the next probe still runs."""
            first: sfn.IChainable | None = None
            ends: list[sfn.INextable] = []
            for step, result_path in probes:
                task = probe(step, result_path)
                failed_probe = sfn.Pass(
                    self,
                    f"Preflight{step.state}Crashed",
                    parameters={
                        "check": f"{step.state}: its preflight ran",
                        "step": step.state,
                        "ok": False,
                        "detail.$": "$.probe_error.Cause",
                        "fix": f"see the {step.state} function's logs",
                    },
                    result_path=result_path,
                )
                task.add_catch(failed_probe, errors=["States.ALL"], result_path="$.probe_error")
                for end in ends:
                    end.next(task)
                ends = [task, failed_probe]
                first = first or task
            assert first is not None
            return first

        checks = sfn.Parallel(self, "Preflight", result_path="$.preflight")
        checks.branch(branch((CHECK_SOURCE, "$.source_checks")))
        checks.branch(branch((LIST_FILES, "$.listing_checks"), (INGEST_FILE, "$.reading_checks")))
        checks.branch(
            branch(
                (TRANSFORM, "$.lambda_engine_checks"),
                (TRANSFORM_IN_WAREHOUSE, "$.warehouse_engine_checks"),
                (LOAD, "$.load_checks"),
            )
        )
        checks.branch(branch((ALERT, "$.alert_checks")))
        self._catch(checks, "Preflight")
        report = probe(ARCHIVE, "$", {"results.$": "$.preflight"})  # gathers the checks
        self._catch(report, "PreflightArchive")
        verdict = (
            sfn.Choice(self, "PreflightPassed?")
            .when(
                sfn.Condition.string_equals("$.status", "preflight_passed"),
                sfn.Succeed(self, "PreflightPassed"),
            )
            .otherwise(
                sfn.Fail(
                    self, "PreflightChecksFailed", error="PreflightFailed", cause_path="$.summary"
                )
            )
        )
        return checks.next(report).next(verdict)

    def _invoke(
        self, step: Step, payload: dict[str, object], result_path: str
    ) -> tasks.LambdaInvoke:
        task = tasks.LambdaInvoke(
            self,
            step.state,
            lambda_function=self._functions[step.key],
            comment=step.description,
            payload=sfn.TaskInput.from_object(payload),
            payload_response_only=True,
            retry_on_service_exceptions=False,  # our own Retry below covers them
            result_path=result_path,
        )
        _retry_transient(task, TRANSIENT_ERRORS)
        # A function that timed out (or was killed) may have done part of its work: every
        # step is idempotent, so one more try is safe and often enough (a slow S3 or RDS).
        task.add_retry(
            errors=[LAMBDA_TIMED_OUT],
            interval=Duration.seconds(5),
            max_attempts=1,
            jitter_strategy=sfn.JitterType.FULL,
        )
        return task

    def _task(self, step: Step, payload: dict[str, object], result_path: str) -> tasks.LambdaInvoke:
        task = self._invoke(step, payload, result_path)
        self._catch(task, step.state)
        return task

    def _catch(
        self, state: sfn.TaskStateBase | sfn.Map | sfn.DistributedMap | sfn.Parallel, name: str
    ) -> None:
        """Any error of ``state``: record which state it was, then alert and fail."""
        record = sfn.Pass(
            self,
            f"{name}Failed",
            parameters={"state": name, "error.$": "$.caught"},
            result_path="$.failure",
        )
        state.add_catch(
            record.next(self._on_failure), errors=["States.ALL"], result_path="$.caught"
        )

    def _outcome(
        self, state: str, status: str, counts: dict[str, str], *, release: bool = True
    ) -> sfn.Pass:
        """An early, successful end: the run summary with its status, then the lock's release
        (a run that never held the lock ends at once)."""
        outcome = sfn.Pass(
            self,
            state,
            parameters={
                "status": status,
                "run_id.$": RUN_ID,
                "started_at.$": "$.run.started_at",
                "finished_at.$": "$$.State.EnteredTime",
                "plays_valid": 0,
                **counts,
            },
        )
        outcome.next(
            self._release
            if release
            else self._record_outcome(f"Record{state}", sfn.Succeed(self, f"{state}End"))
        )
        return outcome

    def _record_outcome(
        self, name: str, then: sfn.IChainable, *, status: str | None = None
    ) -> sfn.Parallel:
        """Count the run's end by status, and the plays it loaded (CloudWatch metrics the
        dead-feed and no_rds_data alarms watch), and keep its outcome document; a failure
        to record never fails a run."""
        service = {"Name": "service", "Value": SERVICE}
        status_value = {"Value": status} if status else {"Value.$": "$.status"}
        plays = {"Value": 0} if status else {"Value.$": "$.plays_valid"}
        put_metrics = sfn.CustomState(
            self,
            f"{name}Metrics",
            state_json={
                "Type": "Task",
                "Comment": "Counts how the run ended (metrics: RunsEnded, PlaysLoaded)",
                "Resource": f"arn:{Aws.PARTITION}:states:::aws-sdk:cloudwatch:putMetricData",
                "Parameters": {
                    "Namespace": NAMESPACE,
                    "MetricData": [
                        {
                            "MetricName": RUNS_ENDED,
                            "Dimensions": [service, {"Name": "status", **status_value}],
                            "Value": 1,
                            "Unit": "Count",
                        },
                        {
                            "MetricName": PLAYS_LOADED,
                            "Dimensions": [service],
                            **plays,
                            "Unit": "Count",
                        },
                    ],
                },
            },
        )
        # What the run ended with, kept where the report reads the runs (failed and early
        # ends included: Archive's summary exists only for runs that got that far).
        body = "States.JsonToString($.alert)" if status == "failed" else "States.JsonToString($)"
        put_outcome = tasks.CallAwsService(
            self,
            f"{name}Document",
            comment="Keeps how the run ended under runs/outcomes/ (make report reads it)",
            service="s3",
            action="putObject",
            parameters={
                "Bucket": self._data_bucket.bucket_name,
                "Key.$": f"States.Format('{Layout.outcomes_prefix}{{}}.json', $$.Execution.Name)",
                "Body.$": body,
                "ContentType": "application/json",
            },
            iam_action="s3:PutObject",
            iam_resources=[self._data_bucket.arn_for_objects(f"{Layout.outcomes_prefix}*")],
        )
        # A Parallel: a raw task cannot discard its result, and the run summary must come
        # out of the end unchanged.
        record = sfn.Parallel(self, name, result_path=sfn.JsonPath.DISCARD)
        record.branch(put_metrics)
        record.branch(put_outcome)
        record.add_retry(
            errors=[
                "CloudWatch.CloudWatchException",
                "CloudWatch.LimitExceededException",
                "S3.S3Exception",
            ],
            interval=Duration.seconds(2),
            max_attempts=2,
            jitter_strategy=sfn.JitterType.FULL,
        )
        record.add_catch(then, errors=["States.ALL"], result_path=sfn.JsonPath.DISCARD)
        record.next(then)
        return record

    def _lock_write(
        self, name: str, condition: str, values: dict[str, str]
    ) -> tasks.DynamoUpdateItem:
        """Name this execution the lock's holder, if ``condition`` holds, and hand out the
        next fencing token: the lock item's ``fence``, one more on every acquisition, kept
        when the lock is released. Every step that writes shared state carries it, and Load's
        warehouse transaction refuses a token older than the last it saw."""
        execution_id = sfn.JsonPath.string_at("$$.Execution.Id")
        task = tasks.DynamoUpdateItem(
            self,
            name,
            comment="One run at a time: the lock names this execution, with a new token",
            table=self._lock_table,
            key={"lock_id": tasks.DynamoAttributeValue.from_string(LOCK_ID)},
            update_expression=(
                "SET holder = :holder, run_id = :run, acquired_at = :at ADD fence :one"
            ),
            condition_expression=condition,
            expression_attribute_values={
                ":holder": tasks.DynamoAttributeValue.from_string(execution_id),
                ":run": tasks.DynamoAttributeValue.from_string(
                    sfn.JsonPath.string_at("$$.Execution.Name")
                ),
                ":at": tasks.DynamoAttributeValue.from_string(
                    sfn.JsonPath.string_at("$$.State.EnteredTime")
                ),
                ":one": tasks.DynamoAttributeValue.from_number(1),
                **{
                    key: tasks.DynamoAttributeValue.from_string(value)
                    for key, value in values.items()
                },
            },
            return_values=tasks.DynamoReturnValues.UPDATED_NEW,
            result_selector={"fence.$": "$.Attributes.fence.N"},
            result_path="$.lock_token",
        )
        _retry_transient(task, DYNAMODB_TRANSIENT_ERRORS)
        return task

    def _release_lock(self, name: str, then: sfn.IChainable) -> tasks.DynamoUpdateItem:
        """Release the lock if this execution holds it (its fence counter stays), then go on
        to ``then`` whatever happens: a lock left behind is taken over once its holder no
        longer runs."""
        release = tasks.DynamoUpdateItem(
            self,
            name,
            comment="Release the lock this execution holds",
            table=self._lock_table,
            key={"lock_id": tasks.DynamoAttributeValue.from_string(LOCK_ID)},
            update_expression="REMOVE holder, run_id SET released_at = :at",
            condition_expression="holder = :me",
            expression_attribute_values={
                ":me": tasks.DynamoAttributeValue.from_string(
                    sfn.JsonPath.string_at("$$.Execution.Id")
                ),
                ":at": tasks.DynamoAttributeValue.from_string(
                    sfn.JsonPath.string_at("$$.State.EnteredTime")
                ),
            },
            result_path=sfn.JsonPath.DISCARD,
        )
        _retry_transient(release, DYNAMODB_TRANSIENT_ERRORS)
        release.add_catch(then, errors=["States.ALL"], result_path=sfn.JsonPath.DISCARD)
        release.next(then)
        return release


class _RunsItemReader(sfn.S3JsonItemReader):
    """CDK grants the reader every object of the bucket; it reads the run's file list."""

    def provide_policy_statements(self) -> list[iam.PolicyStatement]:
        assert self.bucket is not None
        return [
            iam.PolicyStatement(
                actions=["s3:GetObject"], resources=[self.bucket.arn_for_objects("runs/*")]
            )
        ]


class _RunsResultWriter(sfn.ResultWriterV2):
    """CDK grants the writer every object of the bucket; it writes under its prefix."""

    def provide_policy_statements(self) -> list[iam.PolicyStatement]:
        assert self.bucket is not None
        return [
            iam.PolicyStatement(
                actions=[
                    "s3:PutObject",
                    "s3:GetObject",
                    "s3:ListMultipartUploadParts",
                    "s3:AbortMultipartUpload",
                ],
                resources=[self.bucket.arn_for_objects(f"{self.prefix}*")],
            )
        ]


def _distributed_map(
    scope: Construct,
    name: str,
    comment: str,
    *,
    data_bucket: s3.IBucket,
    items_key: str,
    item_selector: dict[str, object],
    max_concurrency: int,
    results_prefix: str,
) -> sfn.DistributedMap:
    """A Distributed Map over a JSON list the run wrote under ``runs/`` (never through the
    state), one Standard child execution per item (a child may take 15 minutes), results
    written under ``results_prefix``, none tolerated to fail (AWS's default)."""
    return sfn.DistributedMap(
        scope,
        name,
        comment=comment,
        item_reader=_RunsItemReader(bucket=data_bucket, key=sfn.JsonPath.string_at(items_key)),
        item_selector=item_selector,
        max_concurrency=max_concurrency,
        map_execution_type=sfn.StateMachineType.STANDARD,
        result_writer_v2=_RunsResultWriter(bucket=data_bucket, prefix=results_prefix),
        result_path=sfn.JsonPath.DISCARD,
    )


def _retry_transient(state: sfn.TaskStateBase, errors: list[str]) -> None:
    """Four retries, waiting 2, 4, 8, 16 s (at most 60 s), each with full jitter."""
    state.add_retry(
        errors=errors,
        interval=Duration.seconds(2),
        max_attempts=4,
        backoff_rate=2.0,
        max_delay=Duration.seconds(60),
        jitter_strategy=sfn.JitterType.FULL,
    )
