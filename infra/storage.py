"""Where the pipeline keeps things: the landing area (existing or created), the data bucket,
and the lock table that lets one run at a time touch them."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra.config import PipelineConfig


def _secure_bucket(
    scope: Construct,
    construct_id: str,
    logs: s3.IBucket,
    key: kms.IKey | None = None,
    **kwargs: object,
) -> s3.Bucket:
    """Private, TLS-only, encrypted and versioned: the settings every bucket here shares."""
    encryption = (
        {"encryption": s3.BucketEncryption.KMS, "encryption_key": key, "bucket_key_enabled": True}
        if key
        else {"encryption": s3.BucketEncryption.S3_MANAGED}
    )
    return s3.Bucket(
        scope,
        construct_id,
        block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
        **encryption,
        enforce_ssl=True,
        versioned=True,
        object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
        removal_policy=RemovalPolicy.RETAIN,
        server_access_logs_bucket=logs,
        server_access_logs_prefix=f"{construct_id}/",
        **kwargs,  # type: ignore[arg-type]
    )


class PipelineStorage(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, config: PipelineConfig) -> None:
        super().__init__(scope, construct_id)
        noncurrent = s3.LifecycleRule(
            id="expire-old-versions",
            noncurrent_version_expiration=Duration.days(30),
            abort_incomplete_multipart_upload_after=Duration.days(7),
        )
        # A delete (a pending marker, an archived landing file) leaves a delete marker; once
        # the versions behind it expire, only this rule removes it.
        delete_markers = s3.LifecycleRule(
            id="remove-expired-delete-markers", expired_object_delete_marker=True
        )
        # S3 server access logs of the pipeline's buckets (who read or wrote what, when).
        self.access_logs = s3.Bucket(
            self,
            "AccessLogsBucket",
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            encryption=s3.BucketEncryption.S3_MANAGED,  # log delivery cannot use SSE-KMS
            enforce_ssl=True,
            versioned=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_PREFERRED,
            removal_policy=RemovalPolicy.RETAIN,
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="expire-access-logs",
                    expiration=Duration.days(365),
                    noncurrent_version_expiration=Duration.days(30),
                ),
                delete_markers,
            ],
        )

        # A customer-managed key, when the environment asks for one (rotated every year).
        self.data_key: kms.IKey | None = None
        if config.data_bucket.encryption == "kms":
            self.data_key = kms.Key(
                self,
                "DataKey",
                description=f"Music KPI pipeline ({config.name}): the data bucket",
                enable_key_rotation=True,
                removal_policy=RemovalPolicy.RETAIN,
            )
        self.data_bucket = _secure_bucket(
            self,
            "DataBucket",
            self.access_logs,
            self.data_key,
            lifecycle_rules=[
                noncurrent,
                delete_markers,
                s3.LifecycleRule(
                    id="archive-to-cheaper-storage",
                    prefix="archive/",
                    transitions=[
                        s3.Transition(
                            storage_class=s3.StorageClass.INFREQUENT_ACCESS,
                            transition_after=Duration.days(30),
                        ),
                        s3.Transition(
                            storage_class=s3.StorageClass.GLACIER_INSTANT_RETRIEVAL,
                            transition_after=Duration.days(90),
                        ),
                    ],
                ),
                s3.LifecycleRule(
                    id="expire-source-snapshots",
                    prefix="snapshots/",
                    expiration=Duration.days(30),
                ),
                s3.LifecycleRule(
                    id="expire-run-bookkeeping",
                    prefix="runs/",
                    expiration=Duration.days(90),
                ),
                s3.LifecycleRule(
                    id="expire-kpi-batches", prefix="kpis/", expiration=Duration.days(90)
                ),
                # A file's failed attempts are rewritten by every run it fails; those of a
                # file that went through (or went away) are of no use after that.
                s3.LifecycleRule(
                    id="expire-ingest-attempts",
                    prefix="quarantine/attempts/",
                    expiration=Duration.days(30),
                ),
            ],
        )
        if config.landing.bucket_name:
            self.landing_bucket: s3.IBucket = s3.Bucket.from_bucket_name(
                self, "LandingBucket", config.landing.bucket_name
            )
        else:
            self.landing_bucket = _secure_bucket(
                self,
                "LandingBucket",
                self.access_logs,
                lifecycle_rules=[noncurrent, delete_markers],
            )

        # One item, written by the state machine itself: the run holding the lock.
        self.lock_table = dynamodb.Table(
            self,
            "LockTable",
            partition_key=dynamodb.Attribute(name="lock_id", type=dynamodb.AttributeType.STRING),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            # The item's fence counter must only grow (the warehouse's fence row holds the
            # last token that loaded): kept when the stack goes, protected from deletion.
            removal_policy=RemovalPolicy.RETAIN,
            deletion_protection=True,
        )
