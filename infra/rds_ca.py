"""``make rds-ca ENV=<env>``: fetch the RDS CA bundle of the environment's region into
``source.ca_bundle`` (cdk.json), which the stack ships to the source's functions so that
``sslmode verify-full`` checks the database's certificate.

AWS publishes one bundle per region at
``https://truststore.pki.rds.amazonaws.com/<region>/<region>-bundle.pem``. The file is
checked before it is kept: PEM certificates only, every one a CA of Amazon RDS; its SHA-256
is printed, to compare with the copy your security team keeps.
"""

from __future__ import annotations

import hashlib
import json
import sys
import urllib.request
from pathlib import Path

from infra.config import ConfigError, load_config

REPO = Path(__file__).resolve().parent.parent
URL = "https://truststore.pki.rds.amazonaws.com/{region}/{region}-bundle.pem"


class BundleRefused(ValueError):
    """What was fetched is not an RDS CA bundle."""


def check_bundle(data: bytes) -> list[str]:
    """The subjects of the bundle's certificates: each a CA, each Amazon RDS's."""
    from cryptography import x509

    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise BundleRefused(f"not PEM certificates ({exc})") from None
    subjects = []
    for certificate in certificates:
        subject = certificate.subject.rfc4514_string()
        try:
            is_ca = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        except x509.ExtensionNotFound:
            is_ca = False
        if not is_ca or "Amazon RDS" not in subject:
            raise BundleRefused(f"{subject} is not an Amazon RDS CA")
        subjects.append(subject)
    return subjects


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: make rds-ca ENV=<env>", file=sys.stderr)
        return 2
    try:
        context = json.loads((REPO / "cdk.json").read_text())["context"]
        config = load_config(context, argv[0])
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    bundle, region = config.source.ca_bundle, config.region
    if not bundle or not region:
        print(f"error: environment {argv[0]} sets no source.ca_bundle", file=sys.stderr)
        return 2
    url = URL.format(region=region)
    with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310 - a fixed https URL
        data = response.read()
    try:
        subjects = check_bundle(data)
    except BundleRefused as exc:
        print(f"error: {url}: {exc}; nothing written", file=sys.stderr)
        return 1
    target = Path(bundle) if Path(bundle).is_absolute() else REPO / bundle
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    print(f"{target}: {len(subjects)} Amazon RDS CAs of {region} from {url}")
    print(f"sha256 {hashlib.sha256(data).hexdigest()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
