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
_CONFIG = Config(retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=10)


def client(service: str) -> Any:
    """The process-wide client for ``service`` (created on first use)."""
    with _lock:
        if service not in _clients:
            _clients[service] = boto3.session.Session().client(service, config=_CONFIG)
        return _clients[service]


def reset_clients() -> None:
    """Drop cached clients (after the environment or the AWS mock changed)."""
    with _lock:
        _clients.clear()
