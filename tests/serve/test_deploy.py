"""The KServe manifests in deploy/kserve: valid YAML whose container runs a `hone serve` that exists.

No Kubernetes here: these check what can go wrong on our side (a flag hone serve does not have,
probes on a route or port the server does not serve, a runtime the InferenceService does not name).
"""

from __future__ import annotations

from pathlib import Path

import typer
import yaml

from hone.cli import app
from hone.serve.http import create_app
from hone.serve.registry import ModelRegistry

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "kserve"


def manifest(name: str) -> dict:
    return yaml.safe_load((DEPLOY / name).read_text())


def serve_options() -> set[str]:
    serve = typer.main.get_command(app).commands["serve"]  # type: ignore[attr-defined]
    return {opt for param in serve.params for opt in getattr(param, "opts", [])}


def test_the_runtime_runs_hone_serve_with_flags_it_has_and_probes_routes_it_serves() -> None:
    runtime = manifest("servingruntime.yaml")
    assert runtime["kind"] == "ServingRuntime"
    assert {"v2", "grpc-v2"} <= set(runtime["spec"]["protocolVersions"])
    container = runtime["spec"]["containers"][0]
    assert container["name"] == "kserve-container"  # the name KServe routes to
    args = container["args"]
    assert args[0] == "serve" and args[1].startswith("/mnt/models/")
    flags = dict(arg.split("=", 1) for arg in args[2:])
    assert set(flags) <= serve_options(), set(flags) - serve_options()
    http_port = int(flags["--http-port"])
    assert container["ports"][0]["containerPort"] == http_port
    routes = {route.path for route in create_app(ModelRegistry(list)).routes}
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] == http_port
        assert container[probe]["httpGet"]["path"] in routes
    assert runtime["spec"]["annotations"]["prometheus.kserve.io/port"] == flags["--metrics-port"]


def test_the_inference_service_uses_the_runtime_and_the_v2_protocol() -> None:
    service = manifest("inferenceservice.yaml")
    runtime = manifest("servingruntime.yaml")
    model = service["spec"]["predictor"]["model"]
    assert model["runtime"] == runtime["metadata"]["name"]
    assert model["protocolVersion"] == "v2"
    assert model["modelFormat"]["name"] in {f["name"] for f in runtime["spec"]["supportedModelFormats"]}
