"""The parsers' network, enforced locally as their security group enforces it in AWS.

IngestFile and ReplayQuarantine parse what anyone may drop in the landing bucket; in AWS they
run in the VPC behind a security group that lets HTTPS out to S3 and DynamoDB only (see
``infra/functions.py``). The local run refuses what that group would: a call to any other
AWS service, and any connection a function opens itself.
"""

from __future__ import annotations

import socket
import subprocess
from typing import Any

import pytest

from kpi_pipeline import aws
from local_runner.network import EgressRefused

pytestmark = pytest.mark.e2e


def _attempts(outcomes: dict[str, str], port: int) -> Any:
    """A wrapper that tries, inside the function, what a compromised parser would."""

    def wrap(handler: Any) -> Any:
        def tried(event: dict[str, Any], context: Any) -> Any:
            for what, attempt in {
                "sns": lambda: aws.client("sns").list_topics(),
                "socket": lambda: socket.create_connection(("127.0.0.1", port), timeout=5).close(),
                "dns": lambda: socket.getaddrinfo("example.com", 443),
                "udp": lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(
                    b"x", ("127.0.0.1", port)
                ),
                "process": lambda: subprocess.run(["true"], check=True),
                "s3": lambda: aws.client("s3").list_buckets(),
                "dynamodb": lambda: aws.client("dynamodb").list_tables(),
            }.items():
                try:
                    attempt()
                    outcomes.setdefault(what, "reached")
                except EgressRefused as refused:
                    outcomes.setdefault(what, f"refused: {refused}")
                except Exception as other:
                    outcomes.setdefault(what, f"{type(other).__name__}: {other}")
            return handler(event, context)

        return tried

    return wrap


@pytest.fixture
def listener() -> Any:
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield server.getsockname()[1]


def test_a_parser_reaches_s3_but_no_other_service_and_opens_no_connection(
    harness, sample, listener
):
    ingest: dict[str, str] = {}
    listing: dict[str, str] = {}
    harness.wrap_handler("ingest_file", _attempts(ingest, listener))
    harness.wrap_handler("list_new_files", _attempts(listing, listener))
    harness.load_source(sample.users_csv, sample.songs_csv)
    harness.put_streams(*sample.stream_files[:1])

    harness.run()

    # Through the network (its IAM role then decides: these two calls are not its own).
    assert not ingest["s3"].startswith("refused"), ingest["s3"]
    assert not ingest["dynamodb"].startswith("refused"), ingest["dynamodb"]
    assert ingest["sns"].startswith("refused: IngestFile may reach S3 and DynamoDB only")
    assert "sns" in ingest["sns"] and "security group" in ingest["sns"]
    assert ingest["socket"].startswith("refused: IngestFile may reach S3 and DynamoDB only")
    assert "127.0.0.1" in ingest["socket"]
    assert ingest["dns"].startswith("refused: IngestFile may reach S3 and DynamoDB only")
    assert ingest["udp"].startswith("refused: IngestFile may reach S3 and DynamoDB only")
    assert ingest["process"].startswith("refused: IngestFile may reach S3 and DynamoDB only")
    # A step outside the VPC has no such group: its own connection goes out (its IAM role,
    # not its network, is what stops its SNS call).
    assert listing["socket"] == "reached"
    assert not listing["sns"].startswith("refused")


def test_every_step_with_a_network_rule_is_enforced(pipeline):
    from infra.steps import ALL_STEPS
    from local_runner.aws import function_access_key
    from local_runner.network import egress_rules

    rules = egress_rules(pipeline)
    parsers = {step.key for step in ALL_STEPS if step.egress}
    expected = {
        function_access_key(f)
        for f in pipeline.functions
        if f.environment["PIPELINE_STEP"] in parsers
    }
    assert len(expected) == 2
    assert set(rules) == expected
    assert {rule.function for rule in rules.values()} == {"IngestFile", "ReplayQuarantine"}
    assert all(rule.services == frozenset({"s3", "dynamodb"}) for rule in rules.values())


def test_the_pipelines_duckdb_never_fetches_an_extension(tmp_path):
    """A crafted path (an https:// URL, a file of another format) must not make the engine
    download and load code: in AWS the parsers have no route for it, and nowhere should."""
    import duckdb

    from kpi_pipeline.engine import connect
    from kpi_pipeline.settings import EngineSettings

    con = connect(EngineSettings(), tmp_path)
    settings = dict(
        con.execute(
            "SELECT name, value FROM duckdb_settings() WHERE name IN "
            "('autoinstall_known_extensions', 'autoload_known_extensions', "
            "'allow_community_extensions')"
        ).fetchall()
    )
    assert settings == {
        "autoinstall_known_extensions": "false",
        "autoload_known_extensions": "false",
        "allow_community_extensions": "false",
    }
    with pytest.raises(duckdb.Error, match="httpfs"):
        con.execute("SELECT * FROM read_csv('https://example.com/plays.csv')")
