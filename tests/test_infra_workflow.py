"""The state machine as synthesized: states, order, choices, retries, catches, alerting."""

from __future__ import annotations

import pytest
from aws_cdk.assertions import Match

from kpi_pipeline.errors import (
    FATAL_ERRORS,
    MAYBE_OUT_OF_MEMORY_ERRORS,
    OUT_OF_MEMORY_ERRORS,
    RETRYABLE_ERRORS,
)
from tests.cdk_apps import definition, template_of

pytestmark = pytest.mark.cdk

TASKS = ["CheckSourceData", "ExtractRds", "ListNewFiles", "PlanTransform", "Load", "Archive"]


@pytest.fixture(scope="module")
def local():
    return template_of("local")


@pytest.fixture(scope="module")
def states(local):
    return definition(local[1])["States"]


def follow(states, start="StartRun"):
    """The happy path: from start, take Default at each Choice, Next elsewhere."""
    path, name = [], start
    while name:
        path.append(name)
        state = states[name]
        name = state.get("Default") or state.get("Next")
    return path


# Every run that plans goes on the same way, whatever it started with.
FROM_PLAN = [
    "PlanTransform",
    "HasDatesToLoad?",
    "TransformDates",
    "Load",
    "Archive",
    "RecordRunOutcome",
    "ReleaseLock",
    "RunComplete",
]


def test_the_happy_path_runs_the_steps_in_the_specified_order(states):
    assert follow(states) == [
        "StartRun",
        "CheckRequest",
        "Preflight?",
        "AcquireLock",
        "CheckSourceData",
        "HasSourceData?",
        "ExtractRds",
        "WhichRun?",
        "NoLandingFiles",
        "ReplayFirst?",
        *FROM_PLAN,
    ]
    assert states["RunComplete"]["Type"] == "Succeed"


def test_the_daily_run_ingests_and_an_operators_request_goes_straight_to_planning(states):
    which = states["WhichRun?"]
    assert which["Choices"] == [
        {"Variable": "$.request.kind", "StringEquals": "daily", "Next": "ListNewFiles"}
    ]
    assert follow(states, "ListNewFiles") == [
        "ListNewFiles",
        "HasNewFiles?",
        "IngestStreams",
        *FROM_PLAN,
    ]
    # a replay accepts rows first, a revalidation moves plays out first; a recompute plans
    # its range at once
    assert states["ReplayFirst?"]["Choices"] == [
        {
            "Or": [
                {"Variable": "$.request.kind", "StringEquals": kind}
                for kind in ("replay_quarantine", "revalidate")
            ],
            "Next": "ReplayQuarantine",
        }
    ]
    assert states["ReplayQuarantine"]["Next"] == "PlanTransform"
    # neither ingests nor archives: Archive gets no manifest key
    assert states["NoLandingFiles"]["Result"] == {"file_count": 0}
    assert states["Archive"]["Parameters"]["manifest.$"] == "$.manifest"


def test_a_request_is_checked_before_the_lock_is_taken(states):
    check = states["CheckRequest"]
    assert check["Parameters"]["execution_input.$"] == "$$.Execution.Input"
    assert check["Next"] == "Preflight?"
    assert states["Preflight?"]["Default"] == "AcquireLock"
    assert check["ResultPath"] == "$.request"
    caught = [c["Next"] for c in check["Catch"]]
    assert caught == ["CheckRequestFailed"]


def test_the_run_id_is_the_execution_name(states):
    assert states["StartRun"]["Parameters"]["run_id.$"] == "$$.Execution.Name"


def test_data_check_choices_end_successfully_with_their_status(states):
    source = states["HasSourceData?"]
    assert source["Type"] == "Choice"
    assert source["Choices"] == [
        {"Variable": "$.source_check.has_data", "BooleanEquals": False, "Next": "NoRdsData"}
    ]
    assert states["NoRdsData"]["Parameters"]["status"] == "no_rds_data"
    assert states["NoRdsData"]["Next"] == "RecordRunOutcome"

    files = states["HasNewFiles?"]
    # no new file and nothing an earlier run left unloaded
    assert files["Choices"] == [
        {
            "And": [
                {"Variable": "$.manifest.file_count", "NumericEquals": 0},
                {"Variable": "$.manifest.pending_contents", "NumericEquals": 0},
            ],
            "Next": "NoNewFiles",
        }
    ]
    assert states["NoNewFiles"]["Parameters"]["status"] == "no_new_files"
    assert states["NoNewFiles"]["Next"] == "RecordRunOutcome"

    dates = states["HasDatesToLoad?"]
    assert dates["Choices"][0]["Next"] == "NothingToLoad"
    assert states["NothingToLoad"]["Next"] == "Archive"


def test_ingest_is_a_distributed_map_reading_the_file_list_from_s3(states):
    ingest = states["IngestStreams"]
    assert ingest["Type"] == "Map"
    assert "ItemsPath" not in ingest  # the file list never travels in the state
    assert ingest["ItemReader"] == {
        "Resource": "arn:<AWS::Partition>:states:::s3:getObject",
        "ReaderConfig": {"InputType": "JSON"},
        "Parameters": {"Bucket": "<StorageDataBucketB1B922FA>", "Key.$": "$.manifest.files_key"},
    }
    assert ingest["ItemSelector"] == {
        "run_id.$": "$.run.run_id",
        "file.$": "$$.Map.Item.Value",
        "snapshot": {"users_key.$": "$.snapshot.users_key", "songs_key.$": "$.snapshot.songs_key"},
        "lock": {"execution.$": "$$.Execution.Id", "fence.$": "$.lock_token.fence"},
        "results_prefix.$": "$.manifest.results_prefix",
    }
    processor = ingest["ItemProcessor"]["ProcessorConfig"]
    assert processor == {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"}
    # no failure tolerated (AWS's default, 0): a file that fails is caught and recorded inside
    assert ingest.get("ToleratedFailurePercentage", 0) == 0
    assert "ToleratedFailureCount" not in ingest
    assert ingest["ResultWriter"]["Parameters"]["Prefix"] == "runs/ingest-map-results/"
    assert ingest["ResultPath"] is None  # per-file results go to S3, not into the state
    assert ingest["MaxConcurrency"] == 4  # the local environment's ingest_concurrency
    inner = ingest["ItemProcessor"]["States"]["IngestFile"]
    assert inner["Type"] == "Task"


def test_each_planned_date_is_transformed_by_a_child_of_a_distributed_map(states):
    """A backlog of N dates is N units, read from S3 (never through the state), at most
    transform_concurrency at once; any date that fails fails the Map, so Load never replaces
    a date it has no KPIs for."""
    dates = states["TransformDates"]
    assert dates["Type"] == "Map"
    assert "ItemsPath" not in dates
    assert dates["ItemReader"]["Parameters"] == {
        "Bucket": "<StorageDataBucketB1B922FA>",
        "Key.$": "$.transform.dates_key",
    }
    assert dates["ItemSelector"] == {
        "run_id.$": "$.run.run_id",
        "kpi_date.$": "$$.Map.Item.Value.kpi_date",
        "plan_version.$": "$.transform.plan_version",
        "attempt.$": "$.transform.attempt",
        "engine.$": "$$.Map.Item.Value.engine",
    }
    assert dates["ItemProcessor"]["ProcessorConfig"] == {
        "Mode": "DISTRIBUTED",
        "ExecutionType": "STANDARD",
    }
    assert dates.get("ToleratedFailurePercentage", 0) == 0
    assert "ToleratedFailureCount" not in dates
    assert dates["MaxConcurrency"] == 10  # transform_concurrency's default
    assert dates["ResultWriter"]["Parameters"]["Prefix"] == "runs/transform-map-results/"
    assert dates["ResultPath"] is None
    inner = dates["ItemProcessor"]["States"]
    assert set(inner) == {"WhichEngine?", "Transform", "TransformInWarehouse"}
    assert dates["ItemProcessor"]["StartAt"] == "WhichEngine?"
    # PlanTransform's engine for the date routes it: the warehouse, or DuckDB by default.
    assert inner["WhichEngine?"]["Choices"] == [
        {"Variable": "$.engine", "StringEquals": "warehouse", "Next": "TransformInWarehouse"}
    ]
    assert inner["WhichEngine?"]["Default"] == "Transform"
    for name in ("Transform", "TransformInWarehouse"):
        assert "Catch" not in inner[name]  # a date that fails fails the run
        assert inner[name]["End"] is True
        assert inner[name]["Parameters"] == {
            "run_id.$": "$.run_id",
            "kpi_date.$": "$.kpi_date",
            "plan_version.$": "$.plan_version",
            "attempt.$": "$.attempt",
        }
    assert dates["Next"] == "Load"
    assert states["HasDatesToLoad?"]["Default"] == "TransformDates"


def test_a_file_failing_after_its_retries_is_recorded_and_the_map_goes_on(states):
    processor = ingest_states = states["IngestStreams"]["ItemProcessor"]["States"]
    (catch,) = ingest_states["IngestFile"]["Catch"]
    assert catch == {
        "ErrorEquals": ["States.ALL"],
        "ResultPath": "$.error",
        "Next": "DescribeFailedFile",
    }
    described = processor["DescribeFailedFile"]
    assert described["Parameters"]["outcome"] == "failed"
    assert described["Parameters"]["reason.$"] == "$.error.Error"
    record = processor[described["Next"]]
    assert record["Resource"].endswith(":states:::aws-sdk:s3:putObject")
    assert record["Parameters"]["Key.$"] == (
        "States.Format('{}{}.json', $.results_prefix, $.file.index)"
    )
    assert record["Parameters"]["Body.$"] == "States.JsonToString($.failed)"
    assert record.get("End") is True


def test_every_task_retries_transient_errors_only_with_backoff_and_jitter(states):
    retryable = {error.__name__ for error in RETRYABLE_ERRORS}
    inner = states["IngestStreams"]["ItemProcessor"]["States"]["IngestFile"]
    per_date = states["TransformDates"]["ItemProcessor"]["States"]["Transform"]
    inner_tasks = [("IngestFile", inner), ("Transform", per_date)]
    for name, state in [(n, states[n]) for n in TASKS] + inner_tasks:
        retry, timed_out, *more = state["Retry"]
        if name == "IngestFile":  # out of memory: once more, in a fresh sandbox
            assert more == [
                {
                    "ErrorEquals": [*OUT_OF_MEMORY_ERRORS, *MAYBE_OUT_OF_MEMORY_ERRORS],
                    "IntervalSeconds": 1,
                    "MaxAttempts": 1,
                }
            ]
        else:
            assert more == [], name
        assert timed_out["ErrorEquals"] == ["Sandbox.Timedout"]  # a function that timed out
        assert timed_out["MaxAttempts"] == 1  # is tried once more: every step is idempotent
        assert retryable <= set(retry["ErrorEquals"]), name
        assert "Lambda.TooManyRequestsException" in retry["ErrorEquals"]
        # a VPC function's network interface being created, or EC2 throttled: transient
        assert "Lambda.ResourceNotReadyException" in retry["ErrorEquals"]
        assert "Lambda.EC2ThrottledException" in retry["ErrorEquals"]
        assert not {e.__name__ for e in FATAL_ERRORS} & set(retry["ErrorEquals"])
        assert "States.ALL" not in retry["ErrorEquals"]
        assert retry["BackoffRate"] == 2
        assert retry["JitterStrategy"] == "FULL"
        assert retry["MaxAttempts"] >= 2


def test_every_step_is_caught_and_its_name_reaches_the_alert(states):
    for name in [*TASKS, "IngestStreams", "TransformDates"]:
        catch = states[name]["Catch"][-1]
        assert catch["ErrorEquals"] == ["States.ALL"]
        record = states[catch["Next"]]
        assert record["Parameters"]["state"] == name
        assert record["Next"] == "DescribeFailure"
    assert states["DescribeFailure"]["Next"] == "ReleaseLockAfterFailure"
    assert states["ReleaseLockAfterFailure"]["Next"] == "RecordFailedRun"
    # No publishing here: the execution's end reaches the alert function (EventBridge),
    # which reads the failed state from DescribeFailure and tells everyone (infra/alerts.py).
    assert states["RecordFailedRun"]["Next"] == "RunFailed"
    assert not [s for s in states.values() if ":sns:" in str(s.get("Resource", ""))]
    fail = states["RunFailed"]
    assert fail["Type"] == "Fail"
    assert (fail["ErrorPath"], fail["CausePath"]) == ("$.alert.error", "$.alert.cause")


def test_one_run_at_a_time_by_a_conditional_write_of_the_lock(states):
    acquire = states["AcquireLock"]
    assert acquire["Resource"] == "arn:<AWS::Partition>:states:::dynamodb:updateItem"
    parameters = acquire["Parameters"]
    assert parameters["ConditionExpression"] == "attribute_not_exists(holder) OR holder = :me"
    # the holder, and a fencing token one larger than any handed out before
    assert parameters["UpdateExpression"] == (
        "SET holder = :holder, run_id = :run, acquired_at = :at ADD fence :one"
    )
    assert parameters["ExpressionAttributeValues"][":holder"] == {"S.$": "$$.Execution.Id"}
    assert parameters["ReturnValues"] == "UPDATED_NEW"
    assert acquire["ResultSelector"] == {"fence.$": "$.Attributes.fence.N"}
    assert acquire["ResultPath"] == "$.lock_token"
    taken = [c for c in acquire["Catch"] if c["ErrorEquals"] != ["States.ALL"]]
    assert taken == [
        {
            "ErrorEquals": ["DynamoDB.ConditionalCheckFailedException"],
            "ResultPath": "$.lock_error",
            "Next": "ReadLockHolder",
        }
    ]
    assert states["ReadLockHolder"]["Parameters"]["ConsistentRead"] is True
    check = states["CheckLockHolder"]
    assert check["Resource"].endswith(":states:::aws-sdk:sfn:describeExecution")
    # RUNNING, or PENDING_REDRIVE (a redrive asked for, about to run): the holder goes on
    not_ended = [
        {
            "Or": [
                {"Variable": "$.holder.status", "StringEquals": "RUNNING"},
                {"Variable": "$.holder.status", "StringEquals": "PENDING_REDRIVE"},
            ],
            "Next": "AlreadyRunning",
        }
    ]
    running = states["HolderStillRunning?"]
    assert running["Choices"] == not_ended
    # an ended holder's functions may write until their timeout: the take-over waits it out
    assert running["Default"] == "WaitOutHolderFunctions"
    wait = states["WaitOutHolderFunctions"]
    assert (wait["Type"], wait["Seconds"], wait["Next"]) == ("Wait", 960, "RecheckLockHolder")
    # ... then asks again: an operator may have redriven the holder meanwhile
    recheck = states["RecheckLockHolder"]
    assert recheck["Resource"].endswith(":states:::aws-sdk:sfn:describeExecution")
    assert recheck["Next"] == "HolderBackSinceTheWait?"
    back = states["HolderBackSinceTheWait?"]
    assert (back["Choices"], back["Default"]) == (not_ended, "TakeOverLock")
    # a holder that does not exist is waited out too, never taken over at once
    (gone,) = [c for c in check["Catch"] if c["ErrorEquals"] != ["States.ALL"]]
    assert gone["ErrorEquals"] == ["Sfn.ExecutionDoesNotExistException"]
    assert gone["Next"] == "WaitOutHolderFunctions"
    assert states["TakeOverLock"]["Parameters"]["ConditionExpression"] == "holder = :stale"
    # the run that never held the lock ends without releasing it (its end is counted)
    assert states["AlreadyRunning"]["Next"] == "RecordAlreadyRunning"
    assert states[states["RecordAlreadyRunning"]["Next"]]["Type"] == "Succeed"
    for release in ("ReleaseLock", "ReleaseLockAfterFailure"):
        assert states[release]["Parameters"]["ConditionExpression"] == "holder = :me"
        # the counter stays: the next acquisition's token is larger still
        assert states[release]["Parameters"]["UpdateExpression"] == (
            "REMOVE holder, run_id SET released_at = :at"
        )
        assert [c["ErrorEquals"] for c in states[release]["Catch"]] == [["States.ALL"]]


def test_a_load_whose_plan_is_outdated_goes_back_to_plan_transform(states):
    replan, fail = states["Load"]["Catch"]
    assert replan == {
        "ErrorEquals": ["PlanOutdated"],
        "ResultPath": "$.replan",
        "Next": "PlanTransform",
    }
    assert fail["ErrorEquals"] == ["States.ALL"]
    assert "PlanOutdated" not in states["Load"]["Retry"][0]["ErrorEquals"]


@pytest.mark.parametrize(
    ("state", "status"),
    [("RecordRunOutcome", {"Value.$": "$.status"}), ("RecordFailedRun", {"Value": "failed"})],
)
def test_every_end_counts_its_status_and_the_plays_it_loaded(states, state, status):
    record = states[state]
    assert record["Type"] == "Parallel" and record["ResultPath"] is None  # summary unchanged
    assert [c["ErrorEquals"] for c in record["Catch"]] == [["States.ALL"]]  # never fails a run
    metrics, outcome = record["Branches"]
    (task,) = metrics["States"].values()
    assert task["Resource"].endswith(":states:::aws-sdk:cloudwatch:putMetricData")
    # ...and keeps how it ended, where `make report` reads the runs
    (document,) = outcome["States"].values()
    assert document["Resource"].endswith(":states:::aws-sdk:s3:putObject")
    assert document["Parameters"]["Key.$"] == (
        "States.Format('runs/outcomes/{}.json', $$.Execution.Name)"
    )
    body = "$.alert" if state == "RecordFailedRun" else "$"
    assert document["Parameters"]["Body.$"] == f"States.JsonToString({body})"
    runs, plays = task["Parameters"]["MetricData"]
    assert runs["MetricName"] == "RunsEnded" and runs["Dimensions"][1] == {
        "Name": "status",
        **status,
    }
    assert plays["MetricName"] == "PlaysLoaded"


def test_the_alert_links_to_the_execution(states):
    link = states["DescribeFailure"]["Parameters"]["console_url.$"]
    assert link.startswith("States.Format('https://")
    assert "#/v2/executions/details/{}', $$.Execution.Id)" in link


def test_daily_schedule_starts_the_state_machine():
    _, template = template_of("prod")
    template.has_resource_properties(
        "AWS::Events::Rule",
        {
            "ScheduleExpression": "cron(0 2 * * ? *)",
            "State": "ENABLED",
            "Targets": [
                Match.object_like(
                    {
                        "Arn": {"Ref": Match.string_like_regexp("StateMachine")},
                        "Input": '{"trigger":"schedule"}',
                    }
                )
            ],
        },
    )


def test_alert_topic_enforces_tls_and_mails_the_team():
    _, template = template_of("prod")
    template.resource_count_is("AWS::SNS::Topic", 1)
    template.has_resource_properties(
        "AWS::SNS::Subscription", {"Protocol": "email", "Endpoint": "data-oncall@example.com"}
    )
    template.has_resource_properties(
        "AWS::SNS::TopicPolicy",
        {
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Effect": "Deny",
                                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                            }
                        )
                    ]
                )
            }
        },
    )


def test_state_machine_logs_everything_and_traces():
    _, template = template_of("prod")
    template.has_resource_properties(
        "AWS::StepFunctions::StateMachine",
        {
            "TracingConfiguration": {"Enabled": True},
            "LoggingConfiguration": Match.object_like(
                {"Level": "ALL", "IncludeExecutionData": True}
            ),
        },
    )


def test_a_preflight_takes_no_lock_and_each_probe_fails_on_its_own(states):
    """{"preflight": true} goes from CheckRequest to the checks, never through the lock;
    a probe that crashes becomes a failed check and the next probe still runs."""
    (choice,) = states["Preflight?"]["Choices"]
    assert choice == {
        "Variable": "$.request.kind",
        "StringEquals": "preflight",
        "Next": "Preflight",
    }
    checks = states["Preflight"]
    assert checks["Type"] == "Parallel" and checks["Next"] == "PreflightArchive"
    probes = {}
    for branch in checks["Branches"]:
        for name, state in branch["States"].items():
            if state["Type"] == "Task":
                probes[name] = state
    assert sorted(probes) == sorted(
        f"Preflight{s}"
        for s in (
            "CheckSourceData",
            "ListNewFiles",
            "IngestFile",
            "Transform",
            "TransformInWarehouse",
            "Load",
            "Alert",  # a test alert, the way every alert goes (the alert function)
        )
    )
    for name, state in probes.items():
        assert [c["Next"] for c in state["Catch"]] == [f"{name}Crashed"]
        assert state["Parameters"]["preflight"] is True
    assert states["PreflightArchive"]["Next"] == "PreflightPassed?"
    assert "AcquireLock" not in follow(states, "Preflight")


def test_every_step_that_writes_shared_state_carries_the_lock_token(states):
    lock = {"execution.$": "$$.Execution.Id", "fence.$": "$.lock_token.fence"}
    for state in ("PlanTransform", "Load", "Archive", "ReplayQuarantine"):
        assert states[state]["Parameters"]["lock"] == lock, state
    ingest = states["IngestStreams"]["ItemProcessor"]["States"]["IngestFile"]
    assert ingest["Parameters"]["lock.$"] == "$.lock"
