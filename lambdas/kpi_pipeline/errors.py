"""Errors with meaning for Step Functions.

Step Functions retries and catches by error *name* (the exception's class name), so the
names below are part of the state machine's contract: ``infra`` builds its Retry rules
from :data:`RETRYABLE_ERRORS`. Retryable errors are transient (a source or AWS service
that may answer next time); every other error is fatal and goes straight to the alert.
"""

from __future__ import annotations


class PipelineError(Exception):
    """Base of every error the pipeline raises on purpose."""


class ObjectArchived(PipelineError):
    """An S3 object in an archive storage class (GLACIER...): it cannot be read until it is
    restored. Not an error of the run: the file is left in landing and counted."""


# --- retryable: transient trouble, Step Functions retries with backoff and jitter ---------


class SourceUnavailable(PipelineError):
    """The source PostgreSQL could not be reached or dropped the connection."""


class StorageUnavailable(PipelineError):
    """S3 throttled us or answered with a server error."""


class WarehouseUnavailable(PipelineError):
    """The warehouse (Redshift Data API or PostgreSQL) is busy, unreachable or too slow."""


class PlanOutdated(PipelineError):
    """Content was accepted for a date after the load plan was made: Transform plans again.

    Not retried (the same plan would fail again): the state machine sends Load's
    PlanOutdated back to Transform.
    """


class PinConflict(PipelineError):
    """A date was pinned to another snapshot while a file was validated: validate again."""


RETRYABLE_ERRORS: tuple[type[PipelineError], ...] = (
    SourceUnavailable,
    StorageUnavailable,
    WarehouseUnavailable,
    PinConflict,
)


# --- fatal: retrying cannot help, a person has to look ---------------------------------------


class ConfigurationError(PipelineError):
    """A setting is missing or malformed; the message says which and how to fix it."""


class SourceSchemaError(PipelineError):
    """The source tables lack columns the spec requires."""


class DataGateError(PipelineError):
    """A data check failed (e.g. no valid song left after cleaning the source)."""


class CorruptObject(DataGateError):
    """An object the pipeline kept (curated plays, a catalogue, its own state) cannot be
    read: the message names it and what to do (kpi_pipeline.kept)."""

    # The data bucket is versioned and keeps an object's earlier versions for 30 days.
    RESTORE = (
        "restore its last good version, then start the run again (docs/runbook.md, 'A kept "
        "object cannot be read')"
    )


class WarehouseStatementFailed(PipelineError):
    """The warehouse rejected a statement (FAILED or ABORTED)."""


class ScratchSpaceExhausted(PipelineError):
    """The function's /tmp is too small for its inputs; the message names the setting."""


class InvalidRequest(PipelineError):
    """The execution's input asks for something the pipeline cannot do (a reversed range, a
    malformed date...): refused before the run takes the lock or touches anything."""


class LockLost(PipelineError):
    """This execution no longer holds the pipeline's lock with its token (it was stopped
    and another run took the lock over, or it was redriven after it released the lock):
    it writes nothing; a new execution catches up from the ledger."""


class IngestFailed(PipelineError):
    """Files could not be ingested (the rest of the run went through; they wait in landing)."""


# What a Lambda that ran out of memory fails with: the runtime's kill, or Python's own
# MemoryError. The state machine retries IngestFile once on these (a fresh sandbox).
OUT_OF_MEMORY_ERRORS = ("Runtime.OutOfMemory", "MemoryError")
# What Lambda may report an out-of-memory kill as (the kill is in its cause: "signal:
# killed"; "memory"): the state machine retries them once too, like OUT_OF_MEMORY_ERRORS.
MAYBE_OUT_OF_MEMORY_ERRORS = ("Runtime.ExitError", "Lambda.Unknown")
# The Lambda service's own errors (throttling, a service fault, a call timed out on Step
# Functions' side): retried by the state machine, never a file's fault.
LAMBDA_SERVICE_ERRORS = (
    "Lambda.ClientExecutionTimeoutException",
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
    # A function in a VPC: its network interface still being made (a function idle for
    # weeks), EC2 throttled or out of interfaces or addresses for a while.
    "Lambda.ResourceNotReadyException",
    "Lambda.EC2ThrottledException",
    "Lambda.ENILimitReachedException",
    "Lambda.SubnetIPAddressLimitReachedException",
    "Lambda.EC2UnexpectedException",
)
# A VPC function's network settings are wrong (the subnets, the security group, the role's
# rights on them): a setting to fix, never retried, never a file's fault.
LAMBDA_NETWORK_SETTINGS_ERRORS = (
    "Lambda.EC2AccessDeniedException",
    "Lambda.InvalidSubnetIDException",
    "Lambda.InvalidSecurityGroupIDException",
)

FATAL_ERRORS: tuple[type[PipelineError], ...] = (
    ConfigurationError,
    SourceSchemaError,
    DataGateError,
    CorruptObject,
    WarehouseStatementFailed,
    ScratchSpaceExhausted,
    InvalidRequest,
    LockLost,
    IngestFailed,
)
