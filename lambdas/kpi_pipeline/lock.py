"""The pipeline's lock, as a step checks it before writing shared state.

The state machine takes the lock (one item of a DynamoDB table) with a conditional write
that names the execution and hands out a fencing token, one more on every acquisition
(infra/workflow.py). A step that writes what other runs read (the ledger, pins, pending
markers, landing files, the source mark, the warehouse) first checks, with a strongly
consistent read, that the lock still names its execution with its token. A stopped
execution whose lock was taken over, or one redriven after it released the lock, fails
here with :class:`LockLost` and writes nothing.

The check cannot stop a step that passed it and keeps running after its execution was
stopped: such an invocation ends at its function's timeout, and the lock is only taken
over after the longest timeout (the WaitOutHolderFunctions state); the Data API batch a
Load leaves behind can run longer, and the warehouse's fence row refuses it.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from kpi_pipeline import aws
from kpi_pipeline.contracts import LockToken
from kpi_pipeline.errors import ConfigurationError, LockLost, StorageUnavailable

LOCK_ID = "pipeline"  # the one lock item (infra/workflow.py LOCK_ID)


def read_lock_item(table: str, client: Any | None = None) -> dict[str, Any]:
    """The lock item as DynamoDB holds it now (a consistent read); empty if never taken."""
    dynamodb = client or aws.client("dynamodb")
    item = dynamodb.get_item(
        TableName=table, Key={"lock_id": {"S": LOCK_ID}}, ConsistentRead=True
    ).get("Item", {})
    return dict(item)


def check_lock(token: LockToken | None, table: str | None, client: Any | None = None) -> None:
    """Raise :class:`LockLost` unless the lock names ``token``'s execution and fence. No
    token (a call outside the state machine: tests, tools) checks nothing."""
    if token is None:
        return
    if not table:
        raise ConfigurationError("LOCK_TABLE is not set: the step cannot check the lock")
    try:
        item = read_lock_item(table, client)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in {"ProvisionedThroughputExceededException", "ThrottlingException"}:
            raise StorageUnavailable(f"DynamoDB {code} while reading the lock") from exc
        raise ConfigurationError(
            f"cannot read the lock ({code}): check LOCK_TABLE and the function's permission"
        ) from exc
    except BotoCoreError as exc:
        raise StorageUnavailable(f"DynamoDB unreachable while reading the lock: {exc}") from exc
    holder = item.get("holder", {}).get("S")
    fence = int(item.get("fence", {}).get("N", 0))
    if holder != token.execution or fence != token.fence:
        now = f"held by {holder} with token {fence}" if holder else f"free (token {fence})"
        raise LockLost(
            f"this execution no longer holds the pipeline's lock (its token {token.fence}; the "
            f"lock is {now}): it writes nothing. A stopped or redriven execution cannot "
            "resume once the lock moved on: start a new execution, which catches up from "
            "the ledger"
        )
