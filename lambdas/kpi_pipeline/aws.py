"""AWS clients, created lazily and shared (boto3 clients are thread-safe, sessions are not).

Adapters take a client argument and default to these, so tests can inject their own.
"""

from __future__ import annotations

import threading
from typing import Any

import boto3
from botocore.config import Config

_lock = threading.Lock()
_clients: dict[str, Any] = {}

# Standard retry mode: exponential backoff with jitter for throttling and 5xx, per call.
CLIENT_CONFIG = Config(retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=10)


def client(service: str, *, role_arn: str | None = None) -> Any:
    """The process-wide client for ``service`` (created on first use).

    With ``role_arn``, a client acting as that role (``sts:AssumeRole``), as Redshift does
    with its COPY role; it is not cached, its credentials expire.
    """
    if role_arn:
        return _assumed(role_arn).client(service, config=CLIENT_CONFIG)
    with _lock:
        if service not in _clients:
            _clients[service] = boto3.session.Session().client(service, config=CLIENT_CONFIG)
        return _clients[service]


def _assumed(role_arn: str) -> boto3.session.Session:
    credentials = client("sts").assume_role(RoleArn=role_arn, RoleSessionName="music-kpi-copy")[
        "Credentials"
    ]
    return boto3.session.Session(
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
    )


def reset_clients() -> None:
    """Drop cached clients (after the environment or the AWS mock changed)."""
    with _lock:
        _clients.clear()
