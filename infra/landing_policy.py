"""What the owner of a landing bucket in another account must add: ``make landing-policy``.

The pipeline's roles are granted in this account; a bucket (and its KMS key) in another
account must also allow them in its own policies, or every read is denied. The statements
below are generated from the environment's configuration and from the same list the
stack grants from (:data:`infra.functions.LANDING_ACCESS`), so they never drift apart.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from infra.config import ConfigError, PipelineConfig, load_config
from infra.functions import LANDING_ACCESS, role_name
from infra.steps import ALL_STEPS

REPO = Path(__file__).resolve().parent.parent


def role_arn(config: PipelineConfig, step_key: str) -> str:
    step = next(s for s in ALL_STEPS if s.key == step_key)
    return f"arn:aws:iam::{config.account}:role/{role_name(config, step)}"


def landing_policies(config: PipelineConfig) -> dict[str, Any]:
    """The bucket policy statements, and the key policy statement when the bucket uses a
    customer-managed key, for the landing bucket's owner to add."""
    landing = config.landing
    if not landing.bucket_name or not config.account:
        raise ConfigError("landing.bucket_name and account are needed to write the policies")
    bucket = f"arn:aws:s3:::{landing.bucket_name}"
    statements: list[dict[str, Any]] = []
    for step_key, access in LANDING_ACCESS.items():
        principal = {"AWS": role_arn(config, step_key)}
        sid = "".join(part.capitalize() for part in step_key.split("_"))
        listing: dict[str, Any] = {
            "Sid": f"MusicKpi{sid}List",
            "Effect": "Allow",
            "Principal": principal,
            "Action": "s3:ListBucket",
            "Resource": bucket,
        }
        if access.list_under_prefix_only:
            listing["Condition"] = {"StringLike": {"s3:prefix": [f"{landing.prefix}*"]}}
        statements.append(listing)
        if access.object_actions:
            statements.append(
                {
                    "Sid": f"MusicKpi{sid}Objects",
                    "Effect": "Allow",
                    "Principal": principal,
                    "Action": list(access.object_actions),
                    "Resource": f"{bucket}/{landing.prefix}*",
                }
            )
    policies: dict[str, Any] = {"bucket_policy_statements": statements}
    if landing.kms_key_arn:
        region = landing.kms_key_arn.split(":")[3]
        policies["key_policy_statement"] = {
            "Sid": "MusicKpiDecryptLandingFiles",
            "Effect": "Allow",
            "Principal": {
                "AWS": [
                    role_arn(config, k) for k, access in LANDING_ACCESS.items() if access.decrypts
                ]
            },
            "Action": "kms:Decrypt",
            "Resource": "*",  # in a key policy, "*" is the key itself
            "Condition": {"StringEquals": {"kms:ViaService": f"s3.{region}.amazonaws.com"}},
        }
    return policies


def main(argv: list[str]) -> int:
    env_name = argv[0] if argv else None
    context = json.loads((REPO / "cdk.json").read_text())["context"]
    try:
        config = load_config(context, env_name)
        print(json.dumps(landing_policies(config), indent=2))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
