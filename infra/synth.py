"""``make synth ENV=prod`` and ``make wheels``: offline synthesis with its checks.

``python -m infra.synth wheels`` downloads the Lambda-platform wheels of our layers (the
one step that needs the network). ``python -m infra.synth ENV`` synthesizes ENV into
``cdk.out/`` exactly as ``cdk synth -c env=ENV`` would, fails on any unacknowledged
cdk-nag finding, and checks every function's unzipped size with its layers against
Lambda's 250 MB limit.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
LAMBDA_LIMIT_BYTES = 262_144_000  # "250 MB": the unzipped code and layers of one function
MB = 1_000_000


@dataclass(frozen=True)
class FunctionSize:
    function: str
    parts: dict[str, int]  # part (code, layer name) -> unzipped bytes

    @property
    def total(self) -> int:
        return sum(self.parts.values())


def download_wheels() -> None:
    from infra.packaging import OWN_LAYERS, PIP_PLATFORM, WHEELHOUSE, requirements

    WHEELHOUSE.mkdir(parents=True, exist_ok=True)
    for layer in OWN_LAYERS:
        subprocess.run(  # noqa: S603 - our own pip, our own pinned requirements
            [
                sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
                "--no-deps", "--dest", str(WHEELHOUSE), *PIP_PLATFORM,
                "-r", str(requirements(layer)),
            ],
            check=True,
        )  # fmt: skip
    print(f"Lambda wheels in {WHEELHOUSE}: {len(list(WHEELHOUSE.glob('*.whl')))} files")


def synthesize(env_name: str, out_dir: Path) -> Path:
    """Synthesize ``env_name`` (with cdk-nag) into ``out_dir``; the stack template's path."""
    import aws_cdk as cdk

    from infra.app import build_app

    context = json.loads((REPO / "cdk.json").read_text())["context"]
    context["env"] = env_name
    # As the CDK CLI does: record each asset's folder, so the size check can find it.
    context["aws:cdk:enable-asset-metadata"] = True
    app, stack = build_app(cdk.App(context=context, outdir=str(out_dir)))
    app.synth()  # raises when cdk-nag reports an unacknowledged finding
    return out_dir / f"{stack.stack_name}.template.json"


def function_sizes(template_path: Path, managed_layer_bytes: int) -> list[FunctionSize]:
    """Each function's code plus layers, unzipped, from the synthesized assets."""
    template = json.loads(template_path.read_text())
    resources: dict[str, Any] = template["Resources"]
    out_dir = template_path.parent
    sizes = []
    for logical_id, resource in resources.items():
        if resource["Type"] != "AWS::Lambda::Function":
            continue
        parts = {"code": _folder_bytes(out_dir / resource["Metadata"]["aws:asset:path"])}
        for layer in resource["Properties"].get("Layers", []):
            ref = layer.get("Ref") if isinstance(layer, dict) else None
            target = resources.get(ref or "")
            if target and target["Type"] == "AWS::Lambda::LayerVersion":
                folder = out_dir / target["Metadata"]["aws:asset:path"]
                parts[_layer_name(target)] = _folder_bytes(folder)
            else:  # the managed AWS SDK for pandas layer (an SSM parameter or an ARN)
                parts["aws_sdk_pandas (managed)"] = managed_layer_bytes
        sizes.append(FunctionSize(_function_name(logical_id), parts))
    return sizes


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _layer_name(resource: dict[str, Any]) -> str:
    description = str(resource["Properties"].get("Description", ""))
    return description.split(" ")[1] if description.startswith("music-kpi ") else "layer"


def _function_name(logical_id: str) -> str:
    return logical_id.removeprefix("Functions").split("Function")[0]


def main(argv: list[str]) -> int:
    if argv == ["wheels"]:
        download_wheels()
        return 0
    if len(argv) != 1:
        print("usage: python -m infra.synth ENV | wheels", file=sys.stderr)
        return 2
    from infra.config import ConfigError, load_config
    from infra.packaging import WheelhouseMissing

    env_name = argv[0]
    context = json.loads((REPO / "cdk.json").read_text())["context"]
    try:
        config = load_config(context, env_name)
        template = synthesize(env_name, REPO / "cdk.out")
    except (ConfigError, WheelhouseMissing) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    resources = json.loads(template.read_text())["Resources"]
    print(f"{template.relative_to(REPO)}: {len(resources)} resources, cdk-nag AwsSolutions clean")
    for kind, count in sorted(Counter(r["Type"] for r in resources.values()).items()):
        print(f"  {count:3d}  {kind}")

    managed = int(config.layers.aws_sdk_pandas_unzipped_mb * MB)
    sizes = function_sizes(template, managed)
    limit = f"250 MiB = {LAMBDA_LIMIT_BYTES / MB:.1f} MB"
    print(f"\nUnzipped size per function with its layers (Lambda's limit: {limit}):")
    too_big = False
    for size in sizes:
        parts = ", ".join(f"{name} {b / MB:.1f}" for name, b in size.parts.items())
        flag = "" if size.total <= LAMBDA_LIMIT_BYTES else "  <-- over the limit"
        too_big |= bool(flag)
        print(f"  {size.function:<12} {size.total / MB:6.1f} MB  ({parts}){flag}")
    return 1 if too_big else 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO / "lambdas"))
    sys.exit(main(sys.argv[1:]))
