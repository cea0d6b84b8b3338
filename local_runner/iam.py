"""IAM, enforced locally: every AWS call is checked against the synthesized policies.

moto answers any call from anyone; AWS refuses what a role's policy does not allow. Here,
each call made by a Lambda function, by the state machine's own integrations, or by
Redshift's COPY (emulated by the local warehouse) is translated into the IAM actions and
resources AWS would authorise, and evaluated against the statements the synthesized
template gives that principal. A call its policy does not allow fails as in AWS
(``AccessDenied``) and is recorded, naming principal, action and resource.

Who is calling is told by the credentials of the client, as in AWS: the local runner hands
each function (and the COPY role) clients with credentials of their own, and moto's state
machine interpreter signs its integration calls with the access key ``ak``. Clients with
any other credentials (the tests' and the runner's own set-up calls) are not checked.

What is evaluated: Allow and Deny statements, actions and resources with ``*`` and ``?``,
and the condition operators StringEquals, StringLike (and their negations) on the keys a
request here can carry (``s3:prefix``, ``cloudwatch:namespace``). What is not: other condition
keys (they are taken as
satisfied, e.g. Redshift's ``statement-owner-iam-userid``, which no local call reaches),
resource policies (bucket and key policies), permission boundaries and SCPs. S3's rule
that reading a missing key without ``s3:ListBucket`` answers 403 rather than 404 is applied.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from botocore.client import BaseClient
from botocore.exceptions import ClientError

STATE_MACHINE_ACCESS_KEY = "ak"  # what moto's state machine interpreter signs with

Context = dict[str, str]


@dataclass(frozen=True)
class Permission:
    """One IAM authorisation a call needs."""

    action: str
    resource: str
    context: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Principal:
    name: str  # e.g. "IngestFile", "StateMachine", "RedshiftCopyRole"
    statements: tuple[dict[str, Any], ...]


@dataclass(frozen=True)
class Violation:
    principal: str
    action: str
    resource: str
    call: str

    def __str__(self) -> str:
        return (
            f"{self.principal} is not allowed {self.action} on {self.resource} "
            f"(by {self.call}; its synthesized IAM policy lacks it)"
        )


@dataclass
class IamCheck:
    """The principals of a synthesized template, and what each call is checked against."""

    principals: dict[str, Principal]  # by access key
    region: str
    account: str
    # The KMS key of each encrypted bucket: reading its objects needs kms:Decrypt, writing
    # them kms:GenerateDataKey (S3 calls KMS on the caller's behalf; moto does not).
    bucket_keys: dict[str, str] = field(default_factory=dict)
    # The KMS key of each encrypted topic: publishing needs kms:GenerateDataKey and
    # kms:Decrypt (SNS calls KMS on the publisher's behalf; moto does not).
    topic_keys: dict[str, str] = field(default_factory=dict)
    violations: list[Violation] = field(default_factory=list)
    verified: set[tuple[str, str, str]] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _inside: threading.local = field(default_factory=threading.local)

    def principal_for(self, access_key: str | None) -> Principal | None:
        return self.principals.get(access_key or "")

    def check(self, client: BaseClient, operation: str, params: dict[str, Any]) -> None:
        """Raise AccessDenied (and record it) unless the caller may make this call."""
        if getattr(self._inside, "active", False):
            return  # a lookup made by the check itself
        credentials = client._request_signer._credentials
        principal = self.principal_for(credentials.access_key if credentials else None)
        if principal is None:
            return
        service = client.meta.service_model.service_name
        self._inside.active = True
        try:
            needed = required_permissions(service, operation, params, self, client)
        finally:
            self._inside.active = False
        for permission in needed:
            if allowed(principal.statements, permission):
                with self._lock:
                    self.verified.add((principal.name, permission.action, permission.resource))
                continue
            violation = Violation(principal.name, permission.action, permission.resource, operation)
            with self._lock:
                self.violations.append(violation)
            raise access_denied(str(violation), operation)
        if service == "s3" and operation in {"GetObject", "HeadObject"}:
            self._missing_key_needs_list(client, principal, params, operation)

    def _missing_key_needs_list(
        self, client: BaseClient, principal: Principal, params: dict[str, Any], operation: str
    ) -> None:
        """S3 answers 403, not 404, for a missing key when the caller may not list the bucket."""
        listing = Permission("s3:ListBucket", f"arn:aws:s3:::{params['Bucket']}")
        if allowed(principal.statements, listing):
            return
        self._inside.active = True
        try:
            client.head_object(Bucket=params["Bucket"], Key=params["Key"])
        except ClientError:
            raise access_denied(
                f"{principal.name} read a missing key s3://{params['Bucket']}/{params['Key']} "
                "without s3:ListBucket on its bucket: S3 answers 403 Access Denied, not 404",
                operation,
            ) from None
        finally:
            self._inside.active = False

    def key_use(self, operation: str, params: dict[str, Any]) -> list[Permission]:
        """What an S3 call on an encrypted bucket also needs of its KMS key: reading an
        object decrypts it, writing one generates a data key, and the parts of a multipart
        upload need both (a HEAD or a delete needs neither)."""
        key = params.get("SSEKMSKeyId") or self.bucket_keys.get(str(params.get("Bucket")))
        needs = _KEY_USE.get(operation, ())
        via = self.via("s3")
        return [Permission(action, key, via) for action in needs] if key else []

    def topic_key_use(self, topic_arn: str) -> list[Permission]:
        """What publishing to an encrypted topic also needs of its KMS key."""
        key = self.topic_keys.get(topic_arn)
        needs = ("kms:GenerateDataKey", "kms:Decrypt")
        return [Permission(action, key, self.via("sns")) for action in needs] if key else []

    def via(self, service: str) -> tuple[tuple[str, str], ...]:
        """The kms:ViaService of a KMS call a service makes on its caller's behalf."""
        return (("kms:ViaService", f"{service}.{self.region}.amazonaws.com"),)

    @staticmethod
    def secret_arn(client: BaseClient, secret_id: str) -> str:
        """IAM sees a secret by its full ARN, whatever the caller named it by."""
        if secret_id.startswith("arn:") and re.search(r"-[A-Za-z0-9]{6}$", secret_id):
            return secret_id
        return str(client.describe_secret(SecretId=secret_id)["ARN"])


def access_denied(message: str, operation: str) -> ClientError:
    return ClientError(
        {
            "Error": {"Code": "AccessDenied", "Message": f"{message} (local IAM check)"},
            "ResponseMetadata": {"HTTPStatusCode": 403},
        },
        operation,
    )


# --- what a call needs ------------------------------------------------------------------------


def _s3_object(params: dict[str, Any]) -> str:
    return f"arn:aws:s3:::{params['Bucket']}/{params['Key']}"


def _copy_source(params: dict[str, Any]) -> str:
    source = params["CopySource"]
    if isinstance(source, dict):
        return f"arn:aws:s3:::{source['Bucket']}/{source['Key']}"
    return f"arn:aws:s3:::{str(source).lstrip('/').split('?', 1)[0]}"


_KEY_USE: dict[str, tuple[str, ...]] = {
    "GetObject": ("kms:Decrypt",),
    "PutObject": ("kms:GenerateDataKey",),
    "CopyObject": ("kms:GenerateDataKey",),
    "CreateMultipartUpload": ("kms:GenerateDataKey",),
    "UploadPart": ("kms:GenerateDataKey", "kms:Decrypt"),
    "UploadPartCopy": ("kms:GenerateDataKey", "kms:Decrypt"),
    "CompleteMultipartUpload": ("kms:GenerateDataKey", "kms:Decrypt"),
}
_S3_OBJECT_ACTIONS = {
    "GetObject": "s3:GetObject",
    "HeadObject": "s3:GetObject",
    "PutObject": "s3:PutObject",
    "CreateMultipartUpload": "s3:PutObject",
    "UploadPart": "s3:PutObject",
    "CompleteMultipartUpload": "s3:PutObject",
    "AbortMultipartUpload": "s3:AbortMultipartUpload",
    "DeleteObject": "s3:DeleteObject",
}


def required_permissions(
    service: str, operation: str, params: dict[str, Any], check: IamCheck, client: BaseClient
) -> list[Permission]:
    """The IAM authorisations AWS evaluates for one API call (the calls this project makes)."""
    region, account = check.region, check.account
    if service == "s3":
        if operation in _S3_OBJECT_ACTIONS:
            action = _S3_OBJECT_ACTIONS[operation]
            return [Permission(action, _s3_object(params)), *check.key_use(operation, params)]
        if operation in {"CopyObject", "UploadPartCopy"}:
            source = _copy_source(params)
            source_bucket = source.split(":::")[1].split("/")[0]
            return [
                Permission("s3:GetObject", source),
                Permission("s3:PutObject", _s3_object(params)),
                *check.key_use("GetObject", {"Bucket": source_bucket}),
                *check.key_use(operation, params),
            ]
        if operation in {"ListObjectsV2", "ListObjects"}:
            context = (("s3:prefix", params["Prefix"]),) if "Prefix" in params else ()
            return [Permission("s3:ListBucket", f"arn:aws:s3:::{params['Bucket']}", context)]
    if service == "secretsmanager" and operation == "GetSecretValue":
        arn = check.secret_arn(client, params["SecretId"])
        return [Permission("secretsmanager:GetSecretValue", arn)]
    if service == "dynamodb" and operation in {"PutItem", "GetItem", "DeleteItem", "UpdateItem"}:
        table = f"arn:aws:dynamodb:{region}:{account}:table/{params['TableName']}"
        return [Permission(f"dynamodb:{operation}", table)]
    if service == "cloudwatch" and operation == "PutMetricData":
        context = (("cloudwatch:namespace", params["Namespace"]),)
        return [Permission("cloudwatch:PutMetricData", "*", context)]
    if service == "sns" and operation == "Publish":
        return [
            Permission("sns:Publish", params["TopicArn"]),
            *check.topic_key_use(params["TopicArn"]),
        ]
    if service == "lambda" and operation == "Invoke":
        name = params["FunctionName"]
        arn = (
            name
            if name.startswith("arn:")
            else f"arn:aws:lambda:{region}:{account}:function:{name}"
        )
        return [Permission("lambda:InvokeFunction", arn)]
    if service == "stepfunctions":
        if operation in {"ListExecutions", "StartExecution"}:
            return [Permission(f"states:{operation}", params["stateMachineArn"])]
        if operation in {"DescribeExecution", "StopExecution", "GetExecutionHistory"}:
            return [Permission(f"states:{operation}", params["executionArn"])]
    if service == "events" and operation == "PutEvents":
        buses = {entry.get("EventBusName") or "default" for entry in params["Entries"]}
        return [
            Permission(
                "events:PutEvents",
                bus
                if bus.startswith("arn:")
                else f"arn:aws:events:{region}:{account}:event-bus/{bus}",
            )
            for bus in sorted(buses)
        ]
    raise access_denied(
        f"the local IAM check does not know which permission {service}:{operation} needs; "
        "teach local_runner/iam.required_permissions before making this call",
        operation,
    )


# --- policy evaluation ------------------------------------------------------------------------


def allowed(statements: tuple[dict[str, Any], ...], permission: Permission) -> bool:
    """IAM's rule: an explicit Deny wins, else some Allow must match."""
    matching = [s for s in statements if _matches(s, permission)]
    if any(s.get("Effect") == "Deny" for s in matching):
        return False
    return any(s.get("Effect") == "Allow" for s in matching)


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _wildcard(pattern: str, value: str, *, case_sensitive: bool = True) -> bool:
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    flags = 0 if case_sensitive else re.IGNORECASE
    return re.fullmatch(regex, value, flags | re.DOTALL) is not None


def _matches(statement: dict[str, Any], permission: Permission) -> bool:
    if "Action" in statement:
        if not any(
            _wildcard(a, permission.action, case_sensitive=False)
            for a in _as_list(statement["Action"])
        ):
            return False
    elif any(
        _wildcard(a, permission.action, case_sensitive=False)
        for a in _as_list(statement.get("NotAction", []))
    ):
        return False
    if not any(_wildcard(r, permission.resource) for r in _as_list(statement.get("Resource", []))):
        return False
    return _conditions_hold(statement.get("Condition", {}), dict(permission.context))


_EVALUATED_KEYS = {"s3:prefix", "cloudwatch:namespace", "kms:viaservice"}


def _conditions_hold(conditions: dict[str, dict[str, Any]], context: Context) -> bool:
    context = {key.lower(): value for key, value in context.items()}  # as IAM: any case
    for operator, tests in conditions.items():
        for key, expected in tests.items():
            key = key.lower()  # condition keys are case-insensitive in IAM
            if key not in _EVALUATED_KEYS:
                continue  # not evaluated locally (see the module's docstring)
            values = [str(v) for v in _as_list(expected)]
            actual = context.get(key)
            if not _operator_holds(operator, values, actual):
                return False
    return True


def _operator_holds(operator: str, values: list[str], actual: str | None) -> bool:
    base = operator.removesuffix("IfExists")
    if actual is None:
        return operator.endswith("IfExists") or base.startswith("StringNot")
    if base == "StringEquals":
        return actual in values
    if base == "StringNotEquals":
        return actual not in values
    if base == "StringLike":
        return any(_wildcard(v, actual) for v in values)
    if base == "StringNotLike":
        return not any(_wildcard(v, actual) for v in values)
    raise ValueError(f"the local IAM check cannot evaluate {operator} on a key it checks")


# --- enforcement ------------------------------------------------------------------------------


@contextlib.contextmanager
def enforced(check: IamCheck) -> Iterator[None]:
    """Check every botocore API call made while inside the block."""
    original: Callable[..., Any] = BaseClient._make_api_call

    def make_api_call(self: BaseClient, operation: str, params: dict[str, Any]) -> Any:
        check.check(self, operation, params)
        return original(self, operation, params)

    BaseClient._make_api_call = make_api_call
    try:
        yield
    finally:
        BaseClient._make_api_call = original
