"""What each Lambda function runs with: pinned layers, the right layers, a size under 250 MB.

The import test runs each handler in a fresh interpreter where only the packages its
layers (and the Lambda runtime) provide can be imported, so a step that pulls in a library
it has no layer for fails here instead of with ``Runtime.ImportModuleError`` in AWS.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

import infra.synth
from infra import packaging
from infra.packaging import (
    AWS_SDK_PANDAS,
    OWN_LAYERS,
    PYTHON_VERSION,
    WheelhouseBundling,
    WheelhouseMissing,
    aws_sdk_pandas_version,
    pinned,
)
from infra.steps import ALL_STEPS, Step
from infra.synth import LAMBDA_LIMIT_BYTES, function_sizes
from tests.cdk_apps import TEST_CA_BUNDLE, template_of

REPO = Path(__file__).resolve().parent.parent
LAMBDAS = REPO / "lambdas"
STEP_IDS = [step.state for step in ALL_STEPS]

# The Lambda Python runtime ships the AWS SDK and its dependencies.
RUNTIME_DISTRIBUTIONS = (
    "boto3",
    "botocore",
    "s3transfer",
    "jmespath",
    "urllib3",
    "python-dateutil",
    "six",
)
# What we rely on from the managed AWS SDK for pandas layer.
AWS_SDK_PANDAS_DISTRIBUTIONS = ("awswrangler", "pandas", "numpy", "pyarrow")
# Imported when the handler runs, not when it loads: in AWS the warehouse is always Redshift
# (config.py allows 'postgres' for the local environment only).
RUN_TIME_IMPORTS = {"load": ("kpi_pipeline.warehouse.redshift",)}


# --- (a) pins ----------------------------------------------------------------------------
@pytest.mark.parametrize("layer", OWN_LAYERS)
def test_layer_pins_are_the_versions_installed_in_the_dev_venv(layer):
    pins = pinned(layer)
    assert pins, f"infra/layers/{layer}/requirements.txt pins nothing"
    installed = {name: importlib.metadata.version(name) for name in pins}
    assert installed == pins


def test_the_managed_layer_version_is_the_installed_awswrangler():
    assert importlib.metadata.version("awswrangler") == aws_sdk_pandas_version()


def test_packages_pinned_in_both_requirements_agree():
    top = {}
    for line in (REPO / "requirements.txt").read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-]+)(\[[^\]]*\])?==([^\s#]+)", line.strip())
        if match:
            top[match.group(1).lower().replace("_", "-")] = match.group(3)
    layer_pins = {name: version for layer in OWN_LAYERS for name, version in pinned(layer).items()}
    shared = set(top) & set(layer_pins)
    assert {"duckdb", "pydantic", "psycopg2-binary", "aws-lambda-powertools"} <= shared
    assert {name: top[name] for name in shared} == {name: layer_pins[name] for name in shared}


# --- (b) layers per function in the template -------------------------------------------------
@pytest.fixture(scope="module")
def prod():
    return template_of("prod")


def layers_of_function(stack: Any, resources: dict[str, Any], step: Step) -> list[str]:
    own = {
        stack.get_logical_id(stack.layers.by_name[name].node.default_child): name
        for name in OWN_LAYERS
    }
    if stack.layers.ca_bundle:
        own[stack.get_logical_id(stack.layers.ca_bundle.node.default_child)] = "rds_ca"
    function = resources[
        stack.get_logical_id(stack.functions.functions[step.key].node.default_child)
    ]
    return [
        own.get(layer["Ref"], f"parameter:{layer['Ref']}")
        for layer in function["Properties"]["Layers"]
    ]


@pytest.mark.cdk
@pytest.mark.parametrize("step", ALL_STEPS, ids=STEP_IDS)
def test_each_function_gets_exactly_its_steps_layers(prod, step):
    stack, template = prod
    as_json = template.to_json()
    layers = layers_of_function(stack, as_json["Resources"], step)
    managed = [layer for layer in layers if layer.startswith("parameter:")]
    assert len(layers) == len(set(layers))
    assert {
        *(layer for layer in layers if layer in OWN_LAYERS),
        *([AWS_SDK_PANDAS] if managed else []),
    } == set(step.layers)
    # the RDS CA bundle (source.ca_bundle) for the steps that reach the source, only
    assert ("rds_ca" in layers) == ("source" in step.settings)
    assert len(managed) == (1 if AWS_SDK_PANDAS in step.layers else 0)
    for layer in managed:
        parameter = as_json["Parameters"][layer.removeprefix("parameter:")]
        assert parameter["Type"] == "AWS::SSM::Parameter::Value<String>"
        assert parameter["Default"] == (
            f"/aws/service/aws-sdk-pandas/{aws_sdk_pandas_version()}/eu-west-1"
            f"/py{PYTHON_VERSION}/x86_64/layer-arn"
        )


@pytest.mark.cdk
def test_own_layers_are_built_for_the_functions_runtime_and_architecture(prod):
    _, template = prod
    layers = {
        name: layer
        for name, layer in template.find_resources("AWS::Lambda::LayerVersion").items()
        if not name.startswith("LayersRdsCaLayer")  # a file, no code: tested below
    }
    assert len(layers) == len(OWN_LAYERS)
    for name, layer in layers.items():
        properties = layer["Properties"]
        assert properties["CompatibleRuntimes"] == [f"python{PYTHON_VERSION}"], name
        assert properties["CompatibleArchitectures"] == ["x86_64"], name
    descriptions = sorted(layer["Properties"]["Description"] for layer in layers.values())
    assert descriptions == sorted(
        f"music-kpi {name} dependencies ({', '.join(pinned(name))})" for name in OWN_LAYERS
    )


# --- (c) each handler imports with only its layers ----------------------------------------------
PROBE = r"""
import ast, importlib, importlib.abc, inspect, json, sys, textwrap

allowed = set(json.loads(sys.argv[1]))
handler_path = sys.argv[2]
run_time_imports = json.loads(sys.argv[3])
origin = []  # what runs the imports, before the modules' own chain
refused = {}  # module -> the chain of importers that asked for it


def stdlib(module):
    top = module.partition(".")[0]
    return top in sys.stdlib_module_names or top.startswith("_sysconfigdata")


def importers():
    # The modules whose top-level code is running, outermost first.
    chain, frame = [], sys._getframe(2)
    while frame is not None:
        if frame.f_code.co_name == "<module>":
            chain.append(frame.f_globals.get("__name__", "?"))
        frame = frame.f_back
    return [name for name in reversed(chain) if name != "__main__"]


class NotInThisLambda(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname.partition(".")[0] in allowed or stdlib(fullname):
            return None
        # Refused; libraries may catch this (optional imports), so only report what escapes.
        refused[fullname] = [*origin, *importers(), fullname]
        raise ModuleNotFoundError(f"No module named {fullname!r} in this function", name=fullname)


def import_everything():
    global origin
    module_name, _, attribute = handler_path.rpartition(".")
    handler = getattr(importlib.import_module(module_name), attribute)
    assert callable(handler), attribute
    # The imports a handler defers to its body run on its first call: import them too.
    origin = [f"{handler_path}() body"]
    for node in ast.walk(ast.parse(textwrap.dedent(inspect.getsource(inspect.unwrap(handler))))):
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                try:
                    importlib.import_module(f"{node.module}.{alias.name}")
                except ModuleNotFoundError as exc:
                    if exc.name != f"{node.module}.{alias.name}":
                        raise
                    importlib.import_module(node.module)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                importlib.import_module(alias.name)
    origin = ["(run time)"]
    for name in run_time_imports:
        importlib.import_module(name)


preloaded = [m for m in sys.modules if not (m.partition(".")[0] in allowed or stdlib(m))]
assert set(preloaded) <= {"__main__", "_distutils_hack"}, preloaded
sys.meta_path.insert(0, NotInThisLambda())
try:
    import_everything()
except ModuleNotFoundError as exc:
    if exc.name in refused:
        found = {"module": exc.name.partition(".")[0], "chain": refused[exc.name]}
        print("FORBIDDEN " + json.dumps(found), file=sys.stderr)
    raise
print("imported", handler_path)
"""
FORBIDDEN = re.compile(r"^FORBIDDEN (\{.*\})$", re.MULTILINE)


def top_level_names(distribution: str) -> set[str]:
    """The importable top-level names a distribution installs (packages and extensions)."""
    names = set()
    for file in importlib.metadata.distribution(distribution).files or []:
        path = PurePosixPath(str(file))
        first = path.parts[0]
        if first.endswith((".dist-info", ".data")) or first in {"..", "__pycache__", "bin"}:
            continue
        name = first if len(path.parts) > 1 else inspect.getmodulename(first)
        if name and name.isidentifier():
            names.add(name)
    return names


def provided_by(layer: str) -> set[str]:
    distributions = (
        AWS_SDK_PANDAS_DISTRIBUTIONS if layer == AWS_SDK_PANDAS else tuple(pinned(layer))
    )
    return set().union(*(top_level_names(d) for d in distributions))


def importable_in(layers: frozenset[str]) -> set[str]:
    own_code = {p.name for p in LAMBDAS.iterdir() if (p / "__init__.py").is_file()}
    runtime = set().union(*(top_level_names(d) for d in RUNTIME_DISTRIBUTIONS))
    return own_code | runtime | set().union(*(provided_by(layer) for layer in layers))


def import_with_only(layers: frozenset[str], handler: str, later: tuple[str, ...] = ()):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env |= {"PYTHONPATH": "lambdas", "AWS_DEFAULT_REGION": "eu-west-1"}
    return subprocess.run(
        [
            sys.executable,
            "-c",
            PROBE,
            json.dumps(sorted(importable_in(layers))),
            handler,
            json.dumps(later),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def forbidden_import(result: subprocess.CompletedProcess[str]) -> dict[str, Any] | None:
    """The first import the probe refused: the module and the chain that asked for it."""
    match = FORBIDDEN.search(result.stderr)
    return json.loads(match.group(1)) if match else None


def test_the_layers_split_the_heavy_libraries_as_documented():
    assert {"pydantic", "aws_lambda_powertools", "aws_xray_sdk"} <= provided_by("base")
    assert "duckdb" in provided_by("duckdb")
    assert provided_by("psycopg2") == {"psycopg2"}
    assert {"pyarrow", "numpy", "pandas", "awswrangler"} <= provided_by(AWS_SDK_PANDAS)
    heavy = {"pyarrow", "numpy", "pandas", "awswrangler", "duckdb", "psycopg2"}
    assert not heavy & importable_in(frozenset({"base"}))
    assert {"boto3", "botocore"} <= importable_in(frozenset())


def test_the_import_probe_refuses_a_library_without_its_layer_and_names_the_chain():
    """The check itself can fail: CheckSourceData without its psycopg2 layer."""
    result = import_with_only(frozenset({"base"}), "extract_rds.handler.check_source")
    assert result.returncode != 0
    found = forbidden_import(result)
    assert found is not None, result.stderr[-2000:]
    assert found["module"] == "psycopg2"
    assert found["chain"][0] == "extract_rds.handler"
    assert found["chain"][-1] == "psycopg2"


@pytest.mark.parametrize("step", ALL_STEPS, ids=STEP_IDS)
def test_each_handler_imports_with_only_its_layers(step):
    result = import_with_only(step.layers, step.handler, RUN_TIME_IMPORTS.get(step.key, ()))
    found = forbidden_import(result)
    if found:
        pytest.fail(
            f"{step.state} (layers: {', '.join(sorted(step.layers))}) imports "
            f"{found['module']!r}, which none of its layers provides: "
            + " -> ".join(found["chain"]),
            pytrace=False,
        )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"imported {step.handler}" in result.stdout


# --- (d) unzipped size per function -------------------------------------------------------------
def write_folder(folder: Path, sizes: dict[str, int]) -> None:
    """Files of exactly these sizes (sparse, so a 100 MB layer costs no disk)."""
    for name, size in sizes.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as handle:
            handle.truncate(size)


def function(asset: str, *layers: Any) -> dict[str, Any]:
    return {
        "Type": "AWS::Lambda::Function",
        "Metadata": {"aws:asset:path": asset},
        "Properties": {"Layers": list(layers)},
    }


def layer(asset: str, name: str) -> dict[str, Any]:
    return {
        "Type": "AWS::Lambda::LayerVersion",
        "Metadata": {"aws:asset:path": asset},
        "Properties": {"Description": f"music-kpi {name} dependencies ({name})"},
    }


def write_template(out_dir: Path, *, duckdb_bytes: int, code_bytes: int = 4_000) -> Path:
    write_folder(
        out_dir / "asset.code",
        {"app/handler.py": code_bytes // 2, "app/sql/x.sql": code_bytes // 2},
    )
    write_folder(
        out_dir / "asset.base", {"python/pydantic/core.so": 6_000_000, "python/a.py": 1_000}
    )
    write_folder(out_dir / "asset.duckdb", {"python/duckdb/_duckdb.so": duckdb_bytes})
    template = {
        "Resources": {
            "FunctionsLoadFunctionEF021E65": function(
                "asset.code", {"Ref": "LayersBaseLayer0C209765"}
            ),
            "FunctionsIngestFileFunction371EDBA6": function(
                "asset.code",
                {"Ref": "SsmParameterValueawssdkpandasParameter"},
                {"Ref": "LayersBaseLayer0C209765"},
                {"Ref": "LayersDuckdbLayer9B270A43"},
            ),
            "FunctionsTransformFunctionF29892DD": function(
                "asset.code",
                "arn:aws:lambda:eu-west-1:336392948345:layer:AWSSDKPandas-Python314:1",
            ),
            "LayersBaseLayer0C209765": layer("asset.base", "base"),
            "LayersDuckdbLayer9B270A43": layer("asset.duckdb", "duckdb"),
            "FunctionsLoadLogs1F6A06B4": {"Type": "AWS::Logs::LogGroup", "Properties": {}},
        }
    }
    path = out_dir / "MusicKpiPipeline-dev.template.json"
    path.write_text(json.dumps(template))
    return path


def test_function_sizes_add_code_own_layers_and_the_managed_layer(tmp_path):
    template = write_template(tmp_path, duckdb_bytes=50_000_000)
    sizes = {
        size.function: size for size in function_sizes(template, managed_layer_bytes=154_000_000)
    }
    assert sizes["Load"].parts == {"code": 4_000, "base": 6_001_000}
    assert sizes["IngestFile"].parts == {
        "code": 4_000,
        "aws_sdk_pandas (managed)": 154_000_000,
        "base": 6_001_000,
        "duckdb": 50_000_000,
    }
    assert sizes["IngestFile"].total == 210_005_000
    # A layer given by ARN (config layers.aws_sdk_pandas_arn) counts as the managed one.
    assert sizes["Transform"].parts == {"code": 4_000, "aws_sdk_pandas (managed)": 154_000_000}
    assert set(sizes) == {"Load", "IngestFile", "Transform"}


def test_the_limit_is_lambdas_250_mb_of_unzipped_code_and_layers():
    assert LAMBDA_LIMIT_BYTES == 262_144_000 == 250 * 1024 * 1024


def run_size_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, duckdb_bytes: int) -> int:
    """``make synth ENV=dev``'s report on a hand-made template (synthesis replaced)."""
    shutil.copy(REPO / "cdk.json", tmp_path / "cdk.json")
    template = write_template(tmp_path / "cdk.out", duckdb_bytes=duckdb_bytes)
    monkeypatch.setattr(infra.synth, "REPO", tmp_path)
    monkeypatch.setattr(infra.synth, "synthesize", lambda env_name, out_dir: template)
    return infra.synth.main(["dev"])


def ingest_file_at_limit() -> int:
    """The duckdb layer size that puts IngestFile exactly at the limit (dev's managed size)."""
    managed = int(154.0 * infra.synth.MB)
    return LAMBDA_LIMIT_BYTES - managed - 4_000 - 6_001_000


def test_a_function_exactly_at_the_limit_passes_the_size_check(tmp_path, monkeypatch, capsys):
    assert run_size_check(tmp_path, monkeypatch, ingest_file_at_limit()) == 0
    assert "over the limit" not in capsys.readouterr().out


def test_a_function_one_byte_over_the_limit_fails_the_size_check(tmp_path, monkeypatch, capsys):
    assert run_size_check(tmp_path, monkeypatch, ingest_file_at_limit() + 1) == 1
    flagged = [line for line in capsys.readouterr().out.splitlines() if "over the limit" in line]
    assert len(flagged) == 1
    assert flagged[0].split()[0] == "IngestFile"


# --- (e) bundling without wheels ------------------------------------------------------------------
def test_bundling_without_the_wheelhouse_says_to_run_make_wheels(tmp_path, monkeypatch):
    monkeypatch.setattr(packaging, "WHEELHOUSE", tmp_path / "lambda-wheels")
    out = tmp_path / "asset"
    with pytest.raises(WheelhouseMissing, match=r"run `make wheels`") as caught:
        WheelhouseBundling("base").try_bundle(str(out))
    assert str(tmp_path / "lambda-wheels") in str(caught.value)
    assert not out.exists()


@pytest.mark.cdk
def test_the_rds_ca_bundle_ships_in_a_layer_and_a_missing_one_says_how_to_fetch_it(prod, tmp_path):
    """Issue 20, item 2: verify-full by default; source.ca_bundle (a PEM file here) ships
    at /opt/rds-ca/bundle.pem, which SOURCE_SSL_ROOT_CERT names; a missing or empty bundle
    fails the synth saying how to get it."""
    from infra.packaging import CaBundleError, stage_ca_bundle

    stack, template = prod
    for step in ALL_STEPS:
        if "source" in step.settings:
            env = template.to_json()["Resources"][
                stack.get_logical_id(stack.functions.functions[step.key].node.default_child)
            ]["Properties"]["Environment"]["Variables"]
            assert (env["SOURCE_SSLMODE"], env["SOURCE_SSL_ROOT_CERT"]) == (
                "verify-full",
                "/opt/rds-ca/bundle.pem",
            )
    staged = stage_ca_bundle(TEST_CA_BUNDLE, "eu-west-1")
    assert (staged / "rds-ca" / "bundle.pem").read_bytes() == TEST_CA_BUNDLE.read_bytes()
    with pytest.raises(CaBundleError, match=r"make rds-ca ENV=<env>.*eu-west-1-bundle.pem"):
        stage_ca_bundle(tmp_path / "missing.pem", "eu-west-1")
    (tmp_path / "page.pem").write_text("<html>Access denied</html>")
    with pytest.raises(CaBundleError, match="holds no PEM certificate"):
        stage_ca_bundle(tmp_path / "page.pem", "eu-west-1")


def test_make_rds_ca_keeps_only_amazon_rds_cas():
    """What `make rds-ca` fetched is checked before it is kept: an HTML error page, a
    certificate that is no CA, or a CA that is not Amazon RDS's is refused."""
    from infra.rds_ca import BundleRefused, check_bundle

    with pytest.raises(BundleRefused, match="not PEM certificates"):
        check_bundle(b"<html>Access Denied</html>")
    with pytest.raises(BundleRefused, match="CN=test-rds-ca is not an Amazon RDS CA"):
        check_bundle(TEST_CA_BUNDLE.read_bytes())
