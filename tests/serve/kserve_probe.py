"""Drive a running ``hone serve`` with KServe's own Python clients; run in ``.cache/kserve-venv``.

``python kserve_probe.py HTTP_BASE GRPC_TARGET MODEL INPUTS_JSON`` (HTTP_BASE ``http://127.0.0.1:P``,
GRPC_TARGET ``127.0.0.1:P``, INPUTS_JSON ``{"x": [[...]], "ids": [[...]]}``: the FP32 ``x`` and INT64
``ids`` of tests/serve/serve_models.py's ``pair`` model) prints one JSON object: for every call, what
it returned (``{"ok": true, "value": ...}``) or what it raised (``{"ok": false, "error": ...}``).
Inference results carry their outputs' data, and ``"equal"``: whether each output is exactly what
numpy computes here (``y = max(x, 0)``, ``z = ids``); the caller compares the data on its own too.

The calls are kserve's: ``InferenceRESTClient`` (``RESTConfig(protocol="v2")``) and
``InferenceGRPCClient`` for health, readiness and inference (``InferRequest``/``InferInput``, JSON and
binary tensors). Those clients have no metadata call, so metadata is read with kserve's own pieces:
over gRPC its generated ``GRPCInferenceServiceStub``, over HTTP a GET parsed by kserve's pydantic
models (``ServerMetadataResponse``, ``ModelMetadataResponse``). Loopback only, no proxies, every call
under a timeout and the whole run under ``RUN_TIMEOUT_S``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import sys
from importlib import metadata
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import grpc
import httpx
import numpy as np
from google.protobuf.json_format import MessageToDict

import kserve
from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, RESTConfig
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub
from kserve.protocol.infer_type import RequestedOutput
from kserve.protocol.rest.v2_datamodels import ModelMetadataResponse, ServerMetadataResponse

CALL_TIMEOUT_S = 10
RUN_TIMEOUT_S = 90
UNKNOWN = "nope"


def _loopback(host: str) -> str:
    if host != "localhost" and not ipaddress.ip_address(host).is_loopback:
        raise SystemExit(f"kserve_probe: {host} is not a loopback address")
    return host


async def _call(make: Callable[[], Awaitable[Any]], convert: Callable[[Any], Any] = lambda v: v) -> dict:
    try:
        return {"ok": True, "value": convert(await make())}
    except grpc.RpcError as exc:
        return {"ok": False, "error": f"{exc.code()}: {exc.details()}"}
    except httpx.HTTPStatusError as exc:
        return {"ok": False, "status": exc.response.status_code, "error": str(exc)}
    except Exception as exc:  # noqa: BLE001 - every other failure is reported, not raised
        return {"ok": False, "error": f"{type(exc).__module__}.{type(exc).__name__}: {exc}"}


class Probe:
    def __init__(self, model: str, x: np.ndarray, ids: np.ndarray) -> None:
        self.model = model
        self.x = x
        self.ids = ids
        self.expected = {"y": np.maximum(x, np.float32(0)), "z": ids}

    def request(self, binary: bool, *, model: str | None = None, **options: Any) -> InferRequest:
        tensors = [
            InferInput("x", list(self.x.shape), "FP32"),
            InferInput("ids", list(self.ids.shape), "INT64"),
        ]
        tensors[0].set_data_from_numpy(self.x, binary_data=binary)
        tensors[1].set_data_from_numpy(self.ids, binary_data=binary)
        return InferRequest(model or self.model, tensors, **options)

    def result(self, response: kserve.InferResponse) -> dict:
        outputs = {}
        for output in response.outputs:
            data = output.as_numpy()
            outputs[output.name] = {
                "datatype": output.datatype,
                "shape": list(output.shape),
                "dtype": str(data.dtype),
                "data": data.tolist(),
                "equal": bool(
                    data.dtype == self.expected[output.name].dtype
                    and np.array_equal(data, self.expected[output.name])
                ),
            }
        return {
            "id": response.id,
            "model_name": response.model_name,
            "model_version": response.model_version,
            "outputs": outputs,
        }


async def rest_checks(probe: Probe, base: str) -> dict:
    # An explicit transport: httpx then ignores *_PROXY variables (and kserve 0.21.0's RESTConfig
    # builds its own retrying transport but never uses it).
    config = RESTConfig(
        protocol="v2", timeout=CALL_TIMEOUT_S, retries=0, transport=httpx.AsyncHTTPTransport(retries=0)
    )
    report: dict[str, Any] = {}
    async with InferenceRESTClient(config) as client:
        model = probe.model
        report["server_live"] = await _call(lambda: client.is_server_live(base))
        report["server_ready"] = await _call(lambda: client.is_server_ready(base))
        report["model_ready"] = await _call(lambda: client.is_model_ready(base, model))
        report["unknown_model_ready"] = await _call(lambda: client.is_model_ready(base, UNKNOWN))

        async def infer(request: InferRequest, name: str = model) -> dict:
            headers: dict[str, str] = {}
            response = await client.infer(base, request, model_name=name, response_headers=headers)
            result = probe.result(response)
            result["binary_body"] = "inference-header-content-length" in {k.lower() for k in headers}
            return result

        report["infer_json"] = await _call(lambda: infer(probe.request(False, request_id="rest-json")))
        report["infer_binary"] = await _call(lambda: infer(probe.request(
            True, request_id="rest-binary", parameters={"binary_data_output": True}
        )))
        report["infer_only_z_binary"] = await _call(lambda: infer(probe.request(
            False, request_id="rest-z", request_outputs=[RequestedOutput("z", parameters={"binary_data": True})]
        )))
        report["infer_unknown_model"] = await _call(lambda: infer(probe.request(False, model=UNKNOWN), UNKNOWN))

    # What the two health routes answer, as bytes: the evidence for server_live/server_ready above.
    async with httpx.AsyncClient(timeout=CALL_TIMEOUT_S, transport=httpx.AsyncHTTPTransport()) as http:
        for route in ("/v2/health/live", "/v2/health/ready"):
            answer = await http.get(base + route)
            report[f"GET {route}"] = {
                "status": answer.status_code,
                "content_type": answer.headers.get("content-type"),
                "body": answer.text,
            }
        report["server_metadata"] = await _call(
            lambda: http.get(base + "/v2"),
            lambda answer: ServerMetadataResponse.model_validate(answer.raise_for_status().json()).model_dump(),
        )
        report["model_metadata"] = await _call(
            lambda: http.get(f"{base}/v2/models/{model}"),
            lambda answer: ModelMetadataResponse.model_validate(answer.raise_for_status().json()).model_dump(),
        )
    return report


async def grpc_checks(probe: Probe, target: str) -> dict:
    # retries=0: no retry service config; no HTTP proxy whatever the environment says.
    options = [("grpc.enable_http_proxy", 0)]
    report: dict[str, Any] = {}
    model = probe.model
    async with InferenceGRPCClient(target, timeout=CALL_TIMEOUT_S, retries=0, channel_args=options) as client:
        report["server_live"] = await _call(lambda: client.is_server_live())
        report["server_ready"] = await _call(lambda: client.is_server_ready())
        report["model_ready"] = await _call(lambda: client.is_model_ready(model))
        report["unknown_model_ready"] = await _call(lambda: client.is_model_ready(UNKNOWN))
        report["infer_contents"] = await _call(
            lambda: client.infer(probe.request(False, request_id="grpc-contents")), probe.result
        )
        report["infer_raw_version_1"] = await _call(
            lambda: client.infer(probe.request(True, request_id="grpc-raw", model_version="1")), probe.result
        )
        report["infer_only_z"] = await _call(
            lambda: client.infer(probe.request(True, request_id="grpc-z", request_outputs=[RequestedOutput("z")])),
            probe.result,
        )
        report["infer_unknown_model"] = await _call(
            lambda: client.infer(probe.request(True, model=UNKNOWN)), probe.result
        )
    async with grpc.aio.insecure_channel(target, options=options) as channel:
        stub = GRPCInferenceServiceStub(channel)
        report["server_metadata"] = await _call(
            lambda: stub.ServerMetadata(pb.ServerMetadataRequest(), timeout=CALL_TIMEOUT_S), MessageToDict
        )
        report["model_metadata"] = await _call(
            lambda: stub.ModelMetadata(pb.ModelMetadataRequest(name=model), timeout=CALL_TIMEOUT_S), MessageToDict
        )
    return report


async def main(base: str, target: str, model: str, inputs: dict) -> dict:
    probe = Probe(model, np.asarray(inputs["x"], dtype=np.float32), np.asarray(inputs["ids"], dtype=np.int64))
    return {
        "kserve": metadata.version("kserve"),
        "rest": await rest_checks(probe, base),
        "grpc": await grpc_checks(probe, target),
    }


if __name__ == "__main__":
    http_base, grpc_target, model_name, inputs_json = sys.argv[1:5]
    _loopback(urlsplit(http_base).hostname or "")
    _loopback(grpc_target.rsplit(":", 1)[0])
    # kserve logs every failed call with its traceback; the failures are in the report instead.
    logging.getLogger("kserve").setLevel(logging.CRITICAL)
    report = asyncio.run(asyncio.wait_for(main(http_base, grpc_target, model_name, json.loads(inputs_json)), RUN_TIMEOUT_S))
    print(json.dumps(report))
