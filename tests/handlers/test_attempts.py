"""Which failed ingests count against a file (kpi_pipeline.attempts), on moto's S3: AWS's
trouble never does, a file that fails alone is given up on however often it is alone, and an
out-of-memory kill is known in each form Lambda reports it."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kpi_pipeline.attempts import give_up_on
from kpi_pipeline.contracts import IngestResult
from kpi_pipeline.layout import Layout
from kpi_pipeline.settings import StorageSettings, load
from kpi_pipeline.storage import Storage


def failed(index: int, name: str, error: str, message: str = "boom") -> IngestResult:
    """A file's result as the Map's Catch records it: the error, and Lambda's cause."""
    cause = json.dumps({"errorType": error, "errorMessage": message})
    return IngestResult(
        index=index,
        key=f"landing/{name}",
        etag="e",
        size=100,
        outcome="failed",
        reason=error,
        detail=cause,
    )


def runs(results: list[IngestResult], *, files_in_run: int, n: int) -> list[dict[int, Any]]:
    """``n`` runs in which these files fail; what each gave up on."""
    layout = Layout.from_settings(load(StorageSettings))
    return [
        give_up_on(
            results,
            f"run-{i}",
            files_in_run=files_in_run,
            max_attempts=3,
            storage=Storage(),
            layout=layout,
        )
        for i in range(n)
    ]


@pytest.mark.parametrize(
    "error",
    [
        "Lambda.TooManyRequestsException",
        "Lambda.ServiceException",
        "Lambda.AWSLambdaException",
        "Lambda.SdkClientException",
        "Lambda.ClientExecutionTimeoutException",
        # a function in a VPC: its network interface not ready yet, EC2 throttled or out
        # of addresses, or the subnet or security group misconfigured
        "Lambda.ResourceNotReadyException",
        "Lambda.EC2ThrottledException",
        "Lambda.ENILimitReachedException",
        "Lambda.SubnetIPAddressLimitReachedException",
        "Lambda.EC2UnexpectedException",
        "Lambda.EC2AccessDeniedException",
        "Lambda.InvalidSubnetIDException",
        "Lambda.InvalidSecurityGroupIDException",
    ],
)
def test_throttling_and_lambda_service_errors_never_count_against_a_file(
    cloud: Any, error: str
) -> None:
    """Throttling at ingest_concurrency 10 fails some files of a run, not all: once the
    retries are spent, the Catch records the service's error. The file is not to blame."""
    assert runs([failed(0, "good.csv", error)], files_in_run=10, n=5) == [{}] * 5


def test_two_poison_files_alone_in_landing_are_given_up_on_in_the_end(cloud: Any) -> None:
    """Every file of the run failed: maybe an outage, so the run is not counted against
    them at first; but two poison files and nothing else would then fail every run for
    ever. Runs in which every file failed count once they are twice max_file_attempts."""
    results = [failed(0, "a.csv", "RuntimeError"), failed(1, "b.csv", "RuntimeError")]

    given = runs(results, files_in_run=2, n=6)

    assert [sorted(g) for g in given] == [[], [], [], [], [], [0, 1]]
    assert "6 failed runs" in given[-1][0].detail


@pytest.mark.parametrize(
    ("error", "message"),
    [
        ("Runtime.OutOfMemory", "Runtime exited with error: signal: killed"),
        ("Runtime.ExitError", "RequestId: 1 Error: Runtime exited with error: signal: killed"),
        ("Lambda.Unknown", "The cause could not be determined: out of memory"),
        ("MemoryError", "DuckDB ran out of memory"),
    ],
)
def test_an_out_of_memory_kill_is_known_in_each_form_lambda_reports_it(
    cloud: Any, error: str, message: str
) -> None:
    """Out of memory (already retried once by the state machine) repeats on every attempt:
    the file is given up on at once."""
    given = runs([failed(0, "big.csv", error, message)], files_in_run=3, n=1)

    assert list(given[0]) == [0]
    assert "repeats on every attempt" in given[0][0].detail


def test_a_run_whose_every_file_ran_out_of_memory_is_not_held_against_them(cloud: Any) -> None:
    """Every file out of memory: the memory setting, not the files (a deploy that lowered
    it would otherwise quarantine a whole day at once)."""
    results = [failed(i, f"f{i}.csv", "Runtime.OutOfMemory", "signal: killed") for i in (0, 1)]

    assert runs(results, files_in_run=2, n=1) == [{}]
