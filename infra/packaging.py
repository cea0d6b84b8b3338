"""Lambda dependencies, packaged without Docker.

Our own layers are built by pip from wheels for the Lambda platform (manylinux x86_64,
CPython 3.14), fetched once into ``.cache/lambda-wheels`` by ``make wheels`` (the only
step that needs the network). Synthesis then installs from that folder with
``--no-index``: offline, reproducible, no Docker. pyarrow and numpy come from the managed
AWS SDK for pandas layer, referenced by its public SSM parameter (resolved by
CloudFormation at deploy time, so synthesis makes no AWS call).
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import jsii
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_ssm as ssm
from constructs import Construct

from infra.config import PipelineConfig

REPO = Path(__file__).resolve().parent.parent
LAYERS_DIR = Path(__file__).resolve().parent / "layers"
WHEELHOUSE = REPO / ".cache" / "lambda-wheels"
RUNTIME = lambda_.Runtime.PYTHON_3_14
PYTHON_VERSION = "3.14"
PIP_PLATFORM = [
    "--only-binary=:all:",
    "--implementation", "cp",
    "--python-version", PYTHON_VERSION,
    "--platform", "manylinux2014_x86_64",
    "--platform", "manylinux_2_28_x86_64",
]  # fmt: skip
OWN_LAYERS = ("base", "duckdb", "psycopg2")
AWS_SDK_PANDAS = "aws_sdk_pandas"


class WheelhouseMissing(RuntimeError):
    """The Lambda wheels have not been fetched yet."""


def requirements(layer: str) -> Path:
    return LAYERS_DIR / layer / "requirements.txt"


def pinned(layer: str) -> dict[str, str]:
    """Package name -> pinned version of one of our layers."""
    pins = {}
    for line in requirements(layer).read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s#]+)", line.strip())
        if match:
            pins[match.group(1).lower().replace("_", "-")] = match.group(2)
    return pins


def aws_sdk_pandas_version() -> str:
    """The awswrangler version of requirements.txt: the managed layer we run against."""
    text = (REPO / "requirements.txt").read_text()
    match = re.search(r"^awswrangler==([^\s#]+)", text, re.MULTILINE)
    if not match:
        raise RuntimeError("requirements.txt must pin awswrangler (the managed layer version)")
    return match.group(1)


@jsii.implements(cdk.ILocalBundling)
class WheelhouseBundling:
    """Install a layer's pinned wheels into ``python/`` of the asset, offline."""

    def __init__(self, layer: str) -> None:
        self._layer = layer

    def try_bundle(self, output_dir: str, *_options: Any, **_kwoptions: Any) -> bool:
        if not WHEELHOUSE.is_dir():
            raise WheelhouseMissing(
                f"no Lambda wheels in {WHEELHOUSE}: run `make wheels` once (it downloads them)"
            )
        target = Path(output_dir) / "python"
        subprocess.run(  # noqa: S603 - our own pip, our own pinned requirements
            [
                sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                "--no-index", "--find-links", str(WHEELHOUSE), "--no-deps",
                "--target", str(target), *PIP_PLATFORM, "-r", str(requirements(self._layer)),
            ],
            check=True,
        )  # fmt: skip
        for cache in target.rglob("__pycache__"):
            shutil.rmtree(cache, ignore_errors=True)
        return True


class PipelineLayers(Construct):
    """Every layer a function may need, by name: ``base``, ``duckdb``, ``psycopg2``,
    ``aws_sdk_pandas``."""

    def __init__(self, scope: Construct, construct_id: str, *, config: PipelineConfig) -> None:
        super().__init__(scope, construct_id)
        self.by_name: dict[str, lambda_.ILayerVersion] = {}
        for layer in OWN_LAYERS:
            self.by_name[layer] = lambda_.LayerVersion(
                self,
                f"{layer.capitalize()}Layer",
                description=f"music-kpi {layer} dependencies ({', '.join(pinned(layer))})",
                compatible_runtimes=[RUNTIME],
                compatible_architectures=[lambda_.Architecture.X86_64],
                code=lambda_.Code.from_asset(
                    str(LAYERS_DIR / layer),
                    bundling=cdk.BundlingOptions(
                        # Never pulled: local bundling always succeeds or raises.
                        image=cdk.DockerImage.from_registry("public.ecr.aws/sam/build-python3.14"),
                        local=WheelhouseBundling(layer),
                    ),
                ),
            )
        self.by_name[AWS_SDK_PANDAS] = lambda_.LayerVersion.from_layer_version_arn(
            self, "AwsSdkPandasLayer", self._aws_sdk_pandas_arn(config)
        )
        self.ca_bundle = self._ca_bundle_layer(config)

    def _aws_sdk_pandas_arn(self, config: PipelineConfig) -> str:
        if config.layers.aws_sdk_pandas_arn:
            return config.layers.aws_sdk_pandas_arn
        region = config.region or cdk.Stack.of(self).region
        parameter = (
            f"/aws/service/aws-sdk-pandas/{aws_sdk_pandas_version()}/{region}"
            f"/py{PYTHON_VERSION}/x86_64/layer-arn"
        )
        return ssm.StringParameter.value_for_string_parameter(self, parameter)

    def _ca_bundle_layer(self, config: PipelineConfig) -> lambda_.ILayerVersion | None:
        """source.ca_bundle, checked and shipped at /opt/rds-ca/bundle.pem."""
        if not config.source.ca_bundle:
            return None
        staged = stage_ca_bundle(Path(config.source.ca_bundle), config.region or "<region>")
        return lambda_.LayerVersion(
            self,
            "RdsCaLayer",
            description="the RDS CA bundle the source's certificate is verified with",
            compatible_runtimes=[RUNTIME],
            code=lambda_.Code.from_asset(str(staged)),
        )

    def for_step(self, names: frozenset[str]) -> list[lambda_.ILayerVersion]:
        return [self.by_name[name] for name in (*OWN_LAYERS, AWS_SDK_PANDAS) if name in names]


class CaBundleError(ValueError):
    """source.ca_bundle is missing or holds no certificate."""


def stage_ca_bundle(bundle: Path, region: str) -> Path:
    """A folder holding only ``rds-ca/bundle.pem`` (the layer's content), after checking
    that ``bundle`` holds PEM certificates (a deploy never ships a bundle that verifies
    nothing, or an HTML error page)."""
    from cryptography import x509

    path = bundle if bundle.is_absolute() else REPO / bundle
    if not path.is_file():
        raise CaBundleError(
            f"source.ca_bundle {bundle} is missing: `make rds-ca ENV=<env>` fetches the RDS CA "
            f"bundle of {region} (https://truststore.pki.rds.amazonaws.com/{region}/"
            f"{region}-bundle.pem) there"
        )
    data = path.read_bytes()
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        certificates = []
    if not certificates:
        raise CaBundleError(f"source.ca_bundle {bundle} holds no PEM certificate")
    digest = hashlib.sha256(data).hexdigest()[:16]
    staged = REPO / ".cache" / "rds-ca-layer" / digest
    target = staged / "rds-ca" / "bundle.pem"
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return staged
