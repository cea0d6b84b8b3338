"""checkov (pinned, infra/checkov.py) on the synthesized dev and prod templates: no check
fails, and every suppression carries its reason (issue 20)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from infra.checkov import CHECKOV_VERSION, SUPPRESSIONS
from tests.cdk_apps import template_of

pytestmark = pytest.mark.cdk

CHECKOV = Path(__file__).resolve().parent.parent / ".cache" / "checkov" / "bin" / "checkov"


def scan(template: Path) -> dict:
    assert CHECKOV.exists(), f"{CHECKOV} is missing: `make checkov` installs it (make test does)"
    done = subprocess.run(
        [
            str(CHECKOV),
            "-f",
            str(template),
            "--framework",
            "cloudformation",
            "-o",
            "json",
            "--compact",
            "--skip-download",  # no network: the checks ship with the package
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    report = json.loads(done.stdout)
    return report[0] if isinstance(report, list) else report


@pytest.mark.parametrize("env_name", ["dev", "prod"])
def test_checkov_finds_nothing_unexplained_in_the_templates(env_name, tmp_path):
    _, template = template_of(env_name)
    path = tmp_path / f"{env_name}.template.json"
    path.write_text(json.dumps(template.to_json()))

    report = scan(path)

    failed = [
        (c["check_id"], c["resource"], c["check_name"]) for c in report["results"]["failed_checks"]
    ]
    assert failed == [], "\n".join(map(str, failed))
    skipped = report["results"]["skipped_checks"]
    assert skipped, "the suppressions were not applied"
    reasons = {s.check: s.reason for s in SUPPRESSIONS}
    for check in skipped:
        assert check["check_result"]["suppress_comment"] == reasons[check["check_id"]]
    assert report["summary"]["passed"] > 200
    assert report["summary"]["checkov_version"] == CHECKOV_VERSION


@pytest.mark.parametrize("env_name", ["dev", "prod"])
def test_cfn_lint_finds_no_error_in_the_templates(env_name, tmp_path):
    """cfn-lint (pinned with checkov): CloudFormation's own schema and rules; no error.
    (Its warnings are CDK's: W3005, a DependsOn beside a GetAtt of the same role.)"""
    _, template = template_of(env_name)
    path = tmp_path / f"{env_name}.template.json"
    path.write_text(json.dumps(template.to_json()))
    done = subprocess.run(
        [str(CHECKOV.with_name("cfn-lint")), "--format", "json", str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    findings = json.loads(done.stdout or "[]")
    errors = [f for f in findings if f["Level"] == "Error"]
    assert errors == [], errors
    assert {f["Rule"]["Id"] for f in findings} <= {"W3005"}
