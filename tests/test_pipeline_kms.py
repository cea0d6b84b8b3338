"""Encrypted buckets, run for real: a landing bucket under a customer-managed key, and a
data bucket under the stack's own key. The local IAM check knows what S3 asks of KMS on the
caller's behalf (Decrypt to read, GenerateDataKey to write), so a missing key grant fails
here as it would in AWS."""

from __future__ import annotations

import pytest

from local_runner.template import load_pipeline, synthesize
from tests.harness import assert_matches_reference, running_harness
from tests.reference_kpis import compute_reference

pytestmark = pytest.mark.e2e

LANDING_KEY = "arn:aws:kms:us-east-1:123456789012:key/landing-key-of-the-feed-team"


@pytest.fixture(scope="module")
def encrypted_pipeline(tmp_path_factory) -> object:
    changes = {
        "landing": {
            "bucket_name": "feed-team-landing",
            "prefix": "streams/",
            "kms_key_arn": LANDING_KEY,
        },
        "data_bucket": {"encryption": "kms"},
    }
    return load_pipeline(synthesize(tmp_path_factory.mktemp("cdk-kms"), "local", changes))


def test_a_run_reads_a_kms_landing_bucket_and_writes_a_kms_data_bucket(
    encrypted_pipeline, new_database, tmp_path, retry_sleeps, sample
):
    assert encrypted_pipeline.bucket_keys["feed-team-landing"] == LANDING_KEY
    with running_harness(encrypted_pipeline, new_database, tmp_path) as harness:
        harness.load_source(sample.users_csv, sample.songs_csv)
        harness.put_streams(*sample.stream_files)

        execution = harness.run("encrypted")

        assert execution.status == "SUCCEEDED", execution.cause
        reference = compute_reference(sample.users_csv, sample.songs_csv, sample.stream_files)
        assert_matches_reference(harness.warehouse(), reference)
        checked = {(action, resource) for _, action, resource in harness.local.iam.verified}
        assert ("kms:Decrypt", LANDING_KEY) in checked
        data_key = encrypted_pipeline.bucket_keys[harness.data_bucket]
        assert {("kms:GenerateDataKey", data_key), ("kms:Decrypt", data_key)} <= checked
