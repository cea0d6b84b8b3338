"""Synthesize the CDK app and read the parts the local runner executes.

The runner executes exactly what ``cdk deploy`` would ship: the state machine definition
and the Lambda functions (handler, environment) of the synthesized CloudFormation
template, with CloudFormation intrinsics (Ref, Fn::GetAtt, Fn::Join, Fn::Sub) resolved to
the names of their local counterparts.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account


class TemplateError(RuntimeError):
    """The template has something the local runner cannot resolve."""


@dataclass(frozen=True)
class LocalFunction:
    logical_id: str
    name: str
    arn: str
    handler: str  # "module.path.function", relative to lambdas/
    environment: dict[str, str]
    memory_mb: int
    timeout_seconds: int
    role: str  # the key of its role in ``LocalPipeline.policies``
    role_name: str = ""  # its IAM role's name (RoleName): its Redshift Serverless user


@dataclass(frozen=True)
class LocalPipeline:
    """The synthesized pipeline, resolved for local execution."""

    state_machine_name: str
    definition: dict[str, Any]
    functions: tuple[LocalFunction, ...]
    buckets: tuple[str, ...]
    topic_arns: tuple[str, ...]
    secret_names: tuple[str, ...]
    tables: dict[str, dict[str, Any]]  # DynamoDB tables: name -> KeySchema, AttributeDefinitions
    # The KMS key each encrypted bucket uses by default (those of the stack and, from the
    # stack's outputs, an existing landing bucket's).
    bucket_keys: dict[str, str]
    topic_keys: dict[str, str]  # the KMS key of each encrypted topic, by its ARN
    outputs: dict[str, str]
    state_machine_role: str
    # Each role's IAM statements, by the role's logical id and its name (by its name alone,
    # for an imported role).
    policies: dict[str, tuple[dict[str, Any], ...]]
    # The rules that send events to an API destination (PagerDuty): their event pattern and
    # the part of the event they send (InputPath).
    api_destination_rules: tuple[tuple[dict[str, Any], str], ...] = ()

    @property
    def transform_engine(self) -> str:
        """PlanTransform's transform.engine, as synthesized."""
        for function in self.functions:
            if "TRANSFORM_ENGINE" in function.environment:
                return function.environment["TRANSFORM_ENGINE"]
        return "lambda"

    def shared_environment(self) -> dict[str, str]:
        """The variables every function has, with the same value: all a process running
        any of them may see (a variable one function has and another lacks would reach the
        other through the process, which AWS never does)."""
        common = dict(self.functions[0].environment) if self.functions else {}
        for function in self.functions[1:]:
            common = {
                name: value
                for name, value in common.items()
                if function.environment.get(name) == value
            }
        return common

    def environment(self) -> dict[str, str]:
        """The variables of the functions' environments that none disagree on (buckets,
        secrets...), for the runner; each invocation gets its own function's environment."""
        merged: dict[str, str] = {}
        disagree: set[str] = set()
        for function in self.functions:
            for name, value in function.environment.items():
                if merged.get(name, value) != value:
                    disagree.add(name)
                merged[name] = value
        return {name: value for name, value in merged.items() if name not in disagree}


def synthesize(
    out_dir: Path, env_name: str = "local", changes: dict[str, Any] | None = None
) -> Path:
    """Run the CDK app (as ``cdk synth`` does) and return the stack's template path;
    ``changes`` replace settings of the environment (tests of other configurations)."""
    context = json.loads((REPO / "cdk.json").read_text())["context"]
    context["env"] = env_name
    context["environments"][env_name].update(changes or {})
    # The local run needs no Lambda bundle: skip any bundling step.
    context["aws:cdk:bundling-stacks"] = []
    env = {
        **os.environ,
        "CDK_OUTDIR": str(out_dir),
        "CDK_CONTEXT_JSON": json.dumps(context),
        # jsii warns once per process on an end-of-life Node.js (the machines here run 20).
        "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "18,20,22",
    }
    done = subprocess.run(  # noqa: S603 - our own app, our own interpreter
        [sys.executable, str(REPO / "app.py")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise TemplateError(f"cdk synth failed:\n{done.stderr.strip() or done.stdout.strip()}")
    templates = sorted(out_dir.glob("*.template.json"))
    if len(templates) != 1:
        raise TemplateError(f"expected one stack template in {out_dir}, found {len(templates)}")
    return templates[0]


# What the synthesized template depends on: a change to any of these synthesizes again.
SYNTH_INPUTS = ("app.py", "cdk.json", "requirements.txt", "infra", "lambdas")


def synthesize_cached(
    out_dir: Path, env_name: str = "local", changes: dict[str, Any] | None = None
) -> tuple[Path, bool]:
    """:func:`synthesize`, reusing the last template when none of its inputs changed.

    Returns the template and whether it came from the cache.
    """
    fingerprint = _fingerprint(env_name, changes)
    stamp = out_dir / "local-runner.fingerprint"
    templates = sorted(out_dir.glob("*.template.json"))
    if stamp.is_file() and stamp.read_text() == fingerprint and len(templates) == 1:
        return templates[0], True
    template = synthesize(out_dir, env_name, changes)
    stamp.write_text(fingerprint)
    return template, False


def _fingerprint(env_name: str, changes: dict[str, Any] | None) -> str:
    digest = hashlib.sha256(env_name.encode())
    digest.update(json.dumps(changes or {}, sort_keys=True).encode())
    for name in SYNTH_INPUTS:
        root = REPO / name
        files = [root] if root.is_file() else sorted(root.rglob("*"))
        for path in files:
            if path.is_file() and "__pycache__" not in path.parts:
                digest.update(str(path.relative_to(REPO)).encode())
                digest.update(path.read_bytes())
    return digest.hexdigest()


def load_pipeline(template_path: Path) -> LocalPipeline:
    template = json.loads(template_path.read_text())
    resources: dict[str, Any] = template["Resources"]
    resolver = _Resolver(resources, stack_name=template_path.name.split(".")[0])

    functions = []
    for logical_id, resource in resources.items():
        if resource["Type"] != "AWS::Lambda::Function":
            continue
        props = resource["Properties"]
        environment = resolver.resolve(props.get("Environment", {}).get("Variables", {}))
        functions.append(
            LocalFunction(
                logical_id=logical_id,
                name=resolver.physical_name(logical_id),
                arn=resolver.get_att(logical_id, "Arn"),
                handler=props["Handler"],
                environment={k: str(v) for k, v in environment.items()},
                memory_mb=int(props.get("MemorySize", 128)),
                timeout_seconds=int(props.get("Timeout", 3)),
                role=_role_of(props["Role"]),
                role_name=resolver.physical_name(_role_of(props["Role"])),
            )
        )
    machines = [
        (logical_id, r)
        for logical_id, r in resources.items()
        if r["Type"] == "AWS::StepFunctions::StateMachine"
    ]
    if len(machines) != 1:
        raise TemplateError(f"expected one state machine, found {len(machines)}")
    machine_id, machine = machines[0]
    definition = json.loads(resolver.resolve(machine["Properties"]["DefinitionString"]))
    outputs = {
        name: str(resolver.resolve(output["Value"]))
        for name, output in template.get("Outputs", {}).items()
    }
    secrets = sorted(
        {
            f.environment[name]
            for f in functions
            for name in ("SOURCE_SECRET_ARN", "REDSHIFT_SECRET_ARN")
            if name in f.environment
        }
    )
    return LocalPipeline(
        state_machine_name=resolver.physical_name(machine_id),
        definition=definition,
        functions=tuple(functions),
        buckets=tuple(
            resolver.physical_name(i)
            for i, r in resources.items()
            if r["Type"] == "AWS::S3::Bucket"
        ),
        topic_arns=tuple(
            resolver.get_att(i, "TopicArn")
            for i, r in resources.items()
            if r["Type"] == "AWS::SNS::Topic"
        ),
        secret_names=tuple(secrets),
        tables={
            resolver.physical_name(i): {
                "KeySchema": r["Properties"]["KeySchema"],
                "AttributeDefinitions": r["Properties"]["AttributeDefinitions"],
            }
            for i, r in resources.items()
            if r["Type"] == "AWS::DynamoDB::Table"
        },
        bucket_keys=_bucket_keys(resources, resolver, outputs),
        topic_keys={
            resolver.get_att(i, "TopicArn"): str(
                resolver.resolve(r["Properties"]["KmsMasterKeyId"])
            )
            for i, r in resources.items()
            if r["Type"] == "AWS::SNS::Topic" and "KmsMasterKeyId" in r["Properties"]
        },
        outputs=outputs,
        state_machine_role=_role_of(machine["Properties"]["RoleArn"]),
        policies=_policies(resources, resolver),
        api_destination_rules=_api_destination_rules(resources, resolver),
    )


def _api_destination_rules(
    resources: dict[str, Any], resolver: _Resolver
) -> tuple[tuple[dict[str, Any], str], ...]:
    """Each rule whose target is an API destination of the stack: (pattern, InputPath)."""
    rules = []
    for resource in resources.values():
        if resource["Type"] != "AWS::Events::Rule":
            continue
        for target in resource["Properties"].get("Targets", []):
            arn = target.get("Arn")
            if isinstance(arn, dict) and "Fn::GetAtt" in arn:
                kind = resources[arn["Fn::GetAtt"][0]]["Type"]
                if kind == "AWS::Events::ApiDestination":
                    pattern = resolver.resolve(resource["Properties"]["EventPattern"])
                    rules.append((pattern, str(target.get("InputPath", "$"))))
    return tuple(rules)


def _bucket_keys(
    resources: dict[str, Any], resolver: _Resolver, outputs: dict[str, str]
) -> dict[str, str]:
    keys: dict[str, str] = {}
    for logical_id, resource in resources.items():
        if resource["Type"] != "AWS::S3::Bucket":
            continue
        encryption = resource["Properties"].get("BucketEncryption", {})
        for rule in encryption.get("ServerSideEncryptionConfiguration", []):
            default = rule.get("ServerSideEncryptionByDefault", {})
            if default.get("SSEAlgorithm") == "aws:kms" and "KMSMasterKeyID" in default:
                keys[resolver.physical_name(logical_id)] = str(
                    resolver.resolve(default["KMSMasterKeyID"])
                )
    if "LandingKmsKeyArn" in outputs:
        keys[outputs["LandingBucketName"]] = outputs["LandingKmsKeyArn"]
    return keys


def _role_of(role_arn: Any) -> str:
    """The logical id of the role a ``Fn::GetAtt [Role, Arn]`` names."""
    if isinstance(role_arn, dict) and "Fn::GetAtt" in role_arn:
        return str(role_arn["Fn::GetAtt"][0])
    raise TemplateError(f"expected a role of this stack, found {role_arn!r}")


def _policies(resources: dict[str, Any], resolver: _Resolver) -> dict[str, tuple[Any, ...]]:
    """Each role's statements: a role of the stack by logical id, an imported one by name."""
    by_role: dict[str, list[dict[str, Any]]] = {}
    for resource in resources.values():
        if resource["Type"] != "AWS::IAM::Policy":
            continue
        props = resource["Properties"]
        statements = resolver.resolve(props["PolicyDocument"])["Statement"]
        for role in props.get("Roles", []):
            if isinstance(role, dict) and "Ref" in role:  # a role of the stack: by id and name
                keys = {role["Ref"], resolver.physical_name(role["Ref"])}
            else:
                keys = {str(role)}
            for key in keys:
                by_role.setdefault(key, []).extend(statements)
    return {role: tuple(statements) for role, statements in by_role.items()}


class _Resolver:
    """Resolves the CloudFormation intrinsics CDK emits, with deterministic local names."""

    def __init__(self, resources: dict[str, Any], stack_name: str) -> None:
        self._resources = resources
        self._pseudo = {
            "AWS::Region": REGION,
            "AWS::AccountId": ACCOUNT,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::StackName": stack_name,
        }

    def physical_name(self, logical_id: str) -> str:
        resource = self._resources[logical_id]
        props = resource.get("Properties", {})
        kind = resource["Type"]
        if kind == "AWS::S3::Bucket":
            name = props.get("BucketName") or f"local-{logical_id.lower()}"
            return str(name)[:63].rstrip("-.")
        if kind == "AWS::StepFunctions::StateMachine" and props.get("StateMachineName"):
            return str(props["StateMachineName"])
        if kind == "AWS::Lambda::Function" and props.get("FunctionName"):
            return str(props["FunctionName"])
        if kind == "AWS::DynamoDB::Table" and props.get("TableName"):
            return str(props["TableName"])
        if kind == "AWS::IAM::Role" and props.get("RoleName"):
            return str(props["RoleName"])
        return logical_id

    def ref(self, name: str) -> str:
        if name in self._pseudo:
            return self._pseudo[name]
        if name not in self._resources:
            raise TemplateError(f"Ref to unknown resource {name}")
        kind = self._resources[name]["Type"]
        if kind == "AWS::SNS::Topic":
            return self.get_att(name, "TopicArn")
        if kind == "AWS::StepFunctions::StateMachine":  # its Ref is its ARN
            return self.get_att(name, "Arn")
        return self.physical_name(name)

    def get_att(self, logical_id: str, attribute: str) -> str:
        kind = self._resources[logical_id]["Type"]
        name = self.physical_name(logical_id)
        arns = {
            ("AWS::Lambda::Function", "Arn"): f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}",
            ("AWS::SNS::Topic", "TopicArn"): f"arn:aws:sns:{REGION}:{ACCOUNT}:{name}",
            ("AWS::S3::Bucket", "Arn"): f"arn:aws:s3:::{name}",
            ("AWS::IAM::Role", "Arn"): f"arn:aws:iam::{ACCOUNT}:role/{name}",
            ("AWS::Logs::LogGroup", "Arn"): f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{name}:*",
            ("AWS::DynamoDB::Table", "Arn"): f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{name}",
            ("AWS::KMS::Key", "Arn"): f"arn:aws:kms:{REGION}:{ACCOUNT}:key/{name}",
            ("AWS::StepFunctions::StateMachine", "Arn"): (
                f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:{name}"
            ),
            ("AWS::Events::ApiDestination", "Arn"): (
                f"arn:aws:events:{REGION}:{ACCOUNT}:api-destination/{name}"
            ),
            ("AWS::SQS::Queue", "Arn"): f"arn:aws:sqs:{REGION}:{ACCOUNT}:{name}",
            ("AWS::SQS::Queue", "QueueName"): name,
            ("AWS::Events::Connection", "Arn"): (
                f"arn:aws:events:{REGION}:{ACCOUNT}:connection/{name}"
            ),
            (
                "AWS::CloudWatch::Alarm",
                "Arn",
            ): f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:{name}",
        }
        if (kind, attribute) not in arns:
            raise TemplateError(f"cannot resolve Fn::GetAtt {logical_id}.{attribute} ({kind})")
        return arns[(kind, attribute)]

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self.resolve(v) for v in value]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, arg),) = value.items()
            if key == "Ref":
                return self.ref(arg)
            if key == "Fn::GetAtt":
                logical_id, attribute = arg if isinstance(arg, list) else arg.split(".", 1)
                return self.get_att(logical_id, attribute)
            if key == "Fn::Join":
                separator, parts = arg
                return separator.join(str(self.resolve(p)) for p in parts)
            if key == "Fn::Sub":
                return self._sub(arg)
            if key == "Fn::Split":
                separator, text = arg
                return str(self.resolve(text)).split(separator)
            if key == "Fn::Select":
                index, items = arg
                return self.resolve(items)[int(index)]
            if key.startswith("Fn::"):
                raise TemplateError(f"the local runner does not resolve {key}")
        return {k: self.resolve(v) for k, v in value.items()}

    def _sub(self, arg: Any) -> str:
        text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name in variables:
                return str(self.resolve(variables[name]))
            if "." in name and not name.startswith("AWS::"):
                logical_id, attribute = name.split(".", 1)
                return self.get_att(logical_id, attribute)
            return self.ref(name)

        return re.sub(r"\$\{([^}!][^}]*)\}", replace, text)
