"""Configuration errors stop the synth before any construct exists, naming the bad setting.

No synthesis here: ``load_config`` and ``PipelineConfig`` are plain pydantic, and ``app.py``
fails on the configuration before it builds anything.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from infra.config import STEPS, ConfigError, PipelineConfig, load_config

REPO = Path(__file__).resolve().parent.parent
CONTEXT: dict[str, Any] = json.loads((REPO / "cdk.json").read_text())["context"]


def environments(env_name: str = "dev", **changes: Any) -> dict[str, Any]:
    """cdk.json's environments, with top-level settings of ``env_name`` replaced
    (a value of ``None`` removes the setting)."""
    envs = copy.deepcopy(CONTEXT["environments"])
    for key, value in changes.items():
        if value is None:
            envs[env_name].pop(key, None)
        else:
            envs[env_name][key] = value
    return {"environments": envs}


def error_of(env_name: str = "dev", **changes: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(environments(env_name, **changes), env_name)
    return str(caught.value)


def dev(setting: str) -> dict[str, Any]:
    return copy.deepcopy(CONTEXT["environments"]["dev"][setting])


def test_every_environment_in_cdk_json_is_valid():
    for env_name in CONTEXT["environments"]:
        config = load_config(environments(env_name), env_name)
        assert config.name == env_name
        assert config.stack_name == f"MusicKpiPipeline-{env_name}"


def test_an_unknown_environment_is_refused_with_the_known_ones_listed():
    with pytest.raises(ConfigError) as caught:
        load_config(environments(), "staging")
    message = str(caught.value)
    assert "unknown environment 'staging'" in message
    assert "dev, local, prod" in message


@pytest.mark.parametrize("env_name", [None, ""])
def test_no_environment_chosen_asks_for_one_and_lists_them(env_name):
    with pytest.raises(ConfigError) as caught:
        load_config(environments(), env_name)
    message = str(caught.value)
    assert "-c env=NAME" in message
    assert "dev, local, prod" in message


@pytest.mark.parametrize("context", [None, {}, {"environments": {}}, {"environments": "dev"}])
def test_a_context_without_environments_is_refused(context):
    with pytest.raises(ConfigError, match="no 'environments' context"):
        load_config(context, "dev")


def test_a_bad_landing_bucket_name_is_named():
    message = error_of(landing={"bucket_name": "Acme_Music_Landing", "prefix": "streams/"})
    assert message.startswith("environment 'dev' in cdk.json is invalid: ")
    assert "landing.bucket_name" in message


@pytest.mark.parametrize("prefix", ["streams", "/streams/"])
def test_a_landing_prefix_must_be_a_folder_without_leading_slash(prefix):
    message = error_of(landing={"bucket_name": "acme-music-dev-landing", "prefix": prefix})
    assert "landing.prefix must look like 'landing/'" in message


@pytest.mark.parametrize("prefix", ["*/", "streams?*/", "a/${aws:username}/", "a b/", "a//"])
def test_a_landing_prefix_holds_literal_key_characters_only(prefix):
    """Issue 20, item 9: the prefix goes into IAM resources and conditions, where * and ?
    are wildcards and ${...} a policy variable: such a prefix would widen GetObject and
    DeleteObject, in our grants and in the policy printed for another account's owner."""
    message = error_of(landing={"bucket_name": "acme-music-dev-landing", "prefix": prefix})
    assert "landing.prefix" in message and "letters, digits" in message


@pytest.mark.parametrize("prefix", ["landing/", "dt=2024/streams_v2/", "a.b-c_d/(x)/'y'!/"])
def test_a_landing_prefix_of_literal_characters_is_taken(prefix):
    landing = {"bucket_name": "acme-music-dev-landing", "prefix": prefix}
    config = load_config(environments("dev", landing=landing), "dev")
    assert config.landing.prefix == prefix


def test_a_cloud_environment_needs_a_network():
    assert "network is required" in error_of(network=None)


@pytest.mark.parametrize("missing", ["account", "region"])
def test_a_cloud_environment_needs_account_and_region(missing):
    assert "account and region are required" in error_of(**{missing: None})


def test_the_local_environment_needs_neither_network_nor_account():
    config = load_config(environments("local"), "local")
    assert config.network is None
    assert config.account is None


def test_subnets_and_zones_must_pair_up():
    network = dev("network")
    network["availability_zones"] = ["eu-west-1a"]
    message = error_of(network=network)
    assert "network.private_subnet_ids and network.availability_zones must pair up" in message


@pytest.mark.parametrize("missing", ["s3_prefix_list_id", "dynamodb_prefix_list_id"])
def test_the_parsers_network_needs_the_regions_s3_and_dynamodb_prefix_lists(missing):
    network = {k: v for k, v in dev("network").items() if k != missing}
    message = error_of(network=network)
    assert f"network.{missing}" in message
    assert "aws ec2 describe-managed-prefix-lists" in message  # how to find it


def test_a_prefix_list_id_is_checked_for_its_form():
    network = dev("network") | {"s3_prefix_list_id": "com.amazonaws.eu-west-1.s3"}
    assert "s3_prefix_list_id" in error_of(network=network)


def test_a_warehouse_with_both_cluster_id_and_workgroup_is_refused():
    warehouse = dev("warehouse") | {"cluster_id": "music-analytics", "db_user": "kpi_loader"}
    message = error_of(warehouse=warehouse)
    assert "warehouse:" in message
    assert "exactly one of cluster_id (provisioned) or workgroup (Serverless)" in message


def test_a_warehouse_with_neither_cluster_id_nor_workgroup_is_refused():
    warehouse = dev("warehouse")
    del warehouse["workgroup"]
    assert "exactly one of cluster_id (provisioned) or workgroup" in error_of(warehouse=warehouse)


def test_a_redshift_warehouse_needs_a_database():
    warehouse = dev("warehouse")
    del warehouse["database"]
    assert "warehouse needs database for Redshift" in error_of(warehouse=warehouse)


def test_without_a_copy_role_the_stack_creates_one():
    assert "copy_role_arn" not in dev("warehouse")
    assert load_config(CONTEXT, "dev").warehouse.copy_role_arn is None


def test_a_serverless_workgroup_refuses_a_db_user():
    """Issue 18, item 4: the Data API would get DbUser beside WorkgroupName, which it does
    not document; on Serverless the user is the function's IAM role."""
    warehouse = dev("warehouse") | {"db_user": "kpi_loader"}
    assert "warehouse.db_user is for a provisioned cluster" in error_of(warehouse=warehouse)


def test_a_serverless_workgroup_needs_the_id_its_arn_ends_with():
    """Issue 20, item 10: a grant on workgroup/* covers every workgroup of the account and
    region; the ARN ends with an id the name does not give."""
    warehouse = dev("warehouse")
    del warehouse["workgroup_id"]
    message = error_of(warehouse=warehouse)
    assert "warehouse.workgroup_id" in message and "get-workgroup" in message
    bad = dev("warehouse") | {"workgroup_id": "*"}
    assert "workgroup_id" in error_of(warehouse=bad)


def test_a_provisioned_cluster_needs_a_db_user_or_a_secret():
    warehouse = dev("warehouse")
    del warehouse["workgroup"]
    warehouse["cluster_id"] = "music-analytics"
    assert "warehouse.db_user or warehouse.secret_arn" in error_of(warehouse=warehouse)


def test_a_copy_role_that_is_not_a_role_arn_is_named():
    warehouse = dev("warehouse") | {"copy_role_arn": "music-dev-redshift-copy"}
    assert "warehouse.copy_role_arn" in error_of(warehouse=warehouse)


def test_a_postgres_warehouse_is_for_the_local_environment_only():
    assert "warehouse.kind 'postgres' is for the local environment only" in error_of(
        warehouse={"kind": "postgres"}
    )


@pytest.mark.parametrize(
    "expression",
    [
        "every day",
        "cron 0 2 * * ? *",
        "rate(1 week)",
        # EventBridge refuses these at deploy time; the synth used to accept them
        "cron(0 2 * * *)",  # five fields
        "cron(0 2 * * * *)",  # day-of-month and day-of-week both set: one must be '?'
        "cron(0 2 ? * ? *)",  # both '?'
        "cron(60 2 * * ? *)",  # minute out of range
        "cron(0 24 * * ? *)",  # hour out of range
        "cron(0 2 * 13 ? *)",  # month out of range
        "cron(0 2 ? * FUNDAY *)",
        "rate(1 days)",  # the unit is singular for 1
        "rate(5 minute)",  # and plural otherwise
        "rate(0 minutes)",
        "rate(-1 hours)",
    ],
)
def test_a_schedule_eventbridge_refuses_is_named_with_a_correct_example(expression):
    message = error_of(schedule={"expression": expression, "enabled": False})
    assert "schedule.expression" in message
    assert "cron(0 2 * * ? *)" in message and "rate(1 day)" in message


@pytest.mark.parametrize(
    "expression",
    [
        "cron(0 2 * * ? *)",
        "cron(0 6 ? * MON-FRI *)",
        "cron(0/15 * * * ? *)",
        "cron(30 1 1,15 * ? *)",
        "cron(0 10 ? * 6L 2026-2030)",
        "cron(0 8 L * ? *)",
        "cron(0 9 ? * 2#1 *)",
        "rate(1 day)",
        "rate(12 hours)",
        "rate(5 minutes)",
    ],
)
def test_schedules_eventbridge_accepts_are_accepted(expression):
    config = load_config(environments(schedule={"expression": expression}), "dev")
    assert config.schedule.expression == expression


def test_a_bad_alert_email_is_named_with_its_position():
    message = error_of(alert_emails=["data-team-dev@example.com", "oncall-at-example"])
    assert "alert_emails.1" in message


def test_an_unknown_step_in_functions_is_named_with_the_known_steps():
    message = error_of(functions={"ingest": {"memory_mb": 1024}})
    assert "functions has unknown steps ['ingest']" in message
    assert all(step in message for step in STEPS)


@pytest.mark.parametrize(("memory_mb", "bound"), [(64, "128"), (20_480, "10240")])
def test_function_memory_out_of_range_is_named(memory_mb, bound):
    message = error_of(functions={"transform": {"memory_mb": memory_mb}})
    assert "functions.transform.memory_mb" in message
    assert bound in message


def test_function_timeout_beyond_lambdas_limit_is_named():
    message = error_of(functions={"load": {"timeout_seconds": 901}})
    assert "functions.load.timeout_seconds" in message


def test_a_misspelt_setting_is_refused_not_ignored():
    with pytest.raises(ValidationError) as caught:
        PipelineConfig.model_validate(
            {"name": "dev", **environments()["environments"]["dev"], "alert_email": []}
        )
    assert "alert_email" in str(caught.value)
    assert "Extra inputs are not permitted" in str(caught.value)


def test_model_validation_reports_the_nested_setting_path():
    settings = {**environments()["environments"]["dev"], "name": "dev"}
    settings["source"] = {**settings["source"], "port": 70_000}
    with pytest.raises(ValidationError) as caught:
        PipelineConfig.model_validate(settings)
    (error,) = caught.value.errors()
    assert error["loc"] == ("source", "port")


def test_unset_function_sizes_fall_back_to_the_defaults_per_step():
    settings = {**environments()["environments"]["dev"], "name": "dev"}
    settings["functions"] = {"load": {"memory_mb": 2048, "timeout_seconds": 600}}
    config = PipelineConfig.model_validate(settings)
    assert (config.function("load").memory_mb, config.function("load").timeout_seconds) == (
        2048,
        600,
    )
    assert config.function("transform").memory_mb == 3008  # the default, not 1024


DEFAULTS = {  # per step: (memory_mb, timeout_seconds, ephemeral_storage_mb)
    "check_request": (256, 30, 512),
    "check_source": (512, 60, 512),
    "extract_rds": (3008, 900, 2048),
    "list_files": (512, 120, 512),
    "ingest_file": (2048, 900, 4096),
    "replay_quarantine": (2048, 900, 4096),
    "plan_transform": (1024, 900, 512),
    "transform": (3008, 900, 6144),
    "transform_in_warehouse": (512, 900, 512),
    "load": (1024, 900, 512),
    "archive": (512, 600, 512),
    "alert": (256, 60, 512),
}


@pytest.mark.parametrize("step", STEPS)
@pytest.mark.parametrize("setting", ["memory_mb", "timeout_seconds", "ephemeral_storage_mb"])
def test_a_partial_function_override_keeps_the_steps_other_defaults(step, setting):
    """Setting only functions.transform.memory_mb used to reset its timeout to 300 s (not
    900) and its /tmp to Lambda's 512 MB: an override merges with the step's own defaults."""
    settings = {**environments()["environments"]["dev"], "name": "dev"}
    value = {"memory_mb": 1536, "timeout_seconds": 777, "ephemeral_storage_mb": 1234}[setting]
    settings["functions"] = {step: {setting: value}}
    sizing = PipelineConfig.model_validate(settings).function(step)
    names = ("memory_mb", "timeout_seconds", "ephemeral_storage_mb")
    expected = dict(zip(names, DEFAULTS[step], strict=True))
    assert sizing.model_dump() == {**expected, setting: value}


@pytest.mark.parametrize(("size", "bound"), [(511, "512"), (10_241, "10240")])
def test_ephemeral_storage_out_of_lambdas_range_is_named(size, bound):
    message = error_of(functions={"ingest_file": {"ephemeral_storage_mb": size}})
    assert "functions.ingest_file.ephemeral_storage_mb" in message
    assert bound in message


def run_app(context: dict[str, Any], outdir: Path) -> subprocess.CompletedProcess[str]:
    """``python app.py`` as the CDK CLI runs it: context in CDK_CONTEXT_JSON."""
    env = {
        **os.environ,
        "CDK_CONTEXT_JSON": json.dumps(context),
        "CDK_OUTDIR": str(outdir),
        "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "18,20,22",
    }
    return subprocess.run(
        [sys.executable, "app.py"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_app_with_an_unknown_environment_exits_with_the_error(tmp_path):
    result = run_app({**CONTEXT, "env": "staging"}, tmp_path)
    assert result.returncode != 0
    assert "error: unknown environment 'staging' (cdk.json has: dev, local, prod)" in (
        result.stderr
    )
    assert "Traceback" not in result.stderr
    assert not list(tmp_path.glob("*.template.json"))  # nothing was synthesized


def test_app_with_an_invalid_setting_exits_naming_it(tmp_path):
    context = copy.deepcopy(CONTEXT) | {"env": "prod"}
    context["environments"]["prod"]["landing"]["prefix"] = "streams"
    result = run_app(context, tmp_path)
    assert result.returncode != 0
    assert "error: environment 'prod' in cdk.json is invalid: landing:" in result.stderr
    assert "landing.prefix" in result.stderr
    assert not list(tmp_path.glob("*.template.json"))


def test_the_source_is_reached_over_tls_outside_the_laptop():
    assert load_config(environments(), "dev").source.sslmode == "verify-full"
    message = error_of(source={**dev("source"), "sslmode": "disable"})
    assert "source.sslmode 'disable' is for the local environment only" in message
    without_bundle = {k: v for k, v in dev("source").items() if k != "ca_bundle"}
    message = error_of(source=without_bundle)  # verify-full, the default, without the CA
    assert "needs the RDS CA bundle: set source.ca_bundle" in message and "make rds-ca" in message
    assert load_config(environments(source={**without_bundle, "sslmode": "require"}), "dev")


# --- alerts: Slack (AWS Chatbot) and PagerDuty -------------------------------------------------
SLACK = {"workspace_id": "T0123ABCD", "channel_id": "C0123ABCDEF"}
PAGERDUTY = {"secret": "music-kpi/dev/pagerduty"}


def test_slack_and_pagerduty_are_optional_and_off_by_default():
    config = load_config(environments("dev"), "dev")
    assert config.alerts.slack is None and config.alerts.pagerduty is None
    prod = load_config(environments("prod"), "prod")  # the example enables both
    assert prod.alerts.slack is not None and prod.alerts.pagerduty is not None


def test_slack_and_pagerduty_settings_are_read():
    config = load_config(environments(alerts={"slack": SLACK, "pagerduty": PAGERDUTY}), "dev")
    assert config.alerts.slack is not None and config.alerts.pagerduty is not None
    assert config.alerts.slack.channel_id == "C0123ABCDEF"
    assert config.alerts.pagerduty.secret == "music-kpi/dev/pagerduty"


@pytest.mark.parametrize(
    ("slack", "named", "says"),
    [
        ({**SLACK, "channel_id": "#data-alerts"}, "alerts.slack.channel_id", "not its name"),
        ({**SLACK, "channel_id": "c0123abcdef"}, "alerts.slack.channel_id", "C0123ABCDEF"),
        ({**SLACK, "workspace_id": "acme.slack.com"}, "alerts.slack.workspace_id", "T"),
        ({"channel_id": "C0123ABCDEF"}, "alerts.slack.workspace_id", "Field required"),
    ],
    ids=["channel-name", "lower-case", "workspace-url", "no-workspace"],
)
def test_a_bad_slack_setting_says_what_the_id_looks_like(slack, named, says):
    message = error_of(alerts={"slack": slack})
    assert named in message
    assert says in message


@pytest.mark.parametrize(
    ("secret", "says"),
    [
        ("e93facc04764012d7bfb002500d5d1a6", "the integration key itself"),
        ("arn:aws:ssm:eu-west-1:111111111111:parameter/pagerduty", "Secrets Manager"),
        ("pager duty key", "Secrets Manager"),
    ],
    ids=["the-key-itself", "not-a-secret-arn", "not-a-name"],
)
def test_a_pagerduty_secret_that_is_no_secret_name_or_arn_is_refused(secret, says):
    message = error_of(alerts={"pagerduty": {"secret": secret}})
    assert "alerts.pagerduty.secret" in message
    assert says in message
    if says == "the integration key itself":
        assert secret not in message  # a key is never echoed


def test_the_runbook_url_is_a_link_or_the_repositorys_path():
    ok = load_config(
        environments(alerts={"runbook_url": "https://git.example.com/music/docs/runbook.md"}),
        "dev",
    )
    assert ok.alerts.runbook_url.startswith("https://")
    assert "alerts.runbook_url" in error_of(alerts={"runbook_url": "http://insecure/runbook"})
