"""The KServe v2 gRPC service of ``hone serve``: Triton's ``inference.GRPCInferenceService``.

The same models, batcher and documents as the HTTP routes, over gRPC (``grpc.aio``, on the
server's one event loop), so tritonclient.grpc and perf_analyzer ``-i grpc`` work unchanged:

    ServerLive, ServerReady, ModelReady          health (never need the bearer token)
    ServerMetadata, ModelMetadata                 the documents of GET /v2 and /v2/models/{m}
    ModelConfig, ModelStatistics                  Triton's configuration and statistics extensions
    RepositoryIndex, RepositoryModelLoad/Unload   Triton's repository extension
    ModelInfer                                    inference through the model's batcher

Tensors: inputs come as ``raw_input_contents`` (one raw buffer per input, the binary format of the
HTTP extension, which is what tritonclient sends) or as typed ``contents`` (``fp32_contents``, ...);
outputs always go back as ``raw_output_contents``, as Triton does. ``priority`` and ``timeout``
(microseconds) request parameters work as over HTTP. Methods hone does not implement (streaming,
shared memory, trace and log settings) answer UNIMPLEMENTED.

Errors: a ``HoneError`` aborts the call with its ``grpc_code`` (INVALID_ARGUMENT, NOT_FOUND,
UNAVAILABLE, ...; ``hone.errors`` sets one on every class) and its one-line message. A client that
cancels a call has its request withdrawn from the queue (grpc.aio cancels the handler, and the
batcher drops a cancelled request).

The message classes come from ``triton_proto`` (the schema of the tritonclient wheel); the
documents are built by ``extensions`` as for HTTP and turned into messages with ``json_format``.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import grpc
import numpy as np
from google.protobuf import json_format

from hone.errors import (
    HoneError,
    InferenceInputError,
    ModelNotReadyError,
    ServedModelNotFoundError,
    ServingError,
)
from hone.serve import extensions, protocol, triton_proto
from hone.serve.budget import DECODE_ON_LOOP_BYTES, DECODE_THREADS, ByteBudget
from hone.serve.datatypes import datatype_from_dtype, dtype_from_datatype
from hone.serve.registry import ModelRegistry

logger = logging.getLogger(__name__)

HEALTH_METHODS = frozenset({"ServerLive", "ServerReady", "ModelReady"})
# Typed ``InferTensorContents`` field of each datatype (FP16 and BF16 travel raw only).
CONTENTS_FIELDS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
Handler = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]


def create_server(
    models: ModelRegistry,
    *,
    token: str | None = None,
    max_message_bytes: int = protocol.DEFAULT_MAX_BODY_BYTES,
    budget: ByteBudget | None = None,
) -> grpc.aio.Server:
    """A grpc.aio server with the inference service registered (ports are added by the caller);
    ``budget`` is shared with the HTTP server (``hone.serve.budget``)."""
    service = InferenceService(models, budget, max_message_bytes)
    rpcs = triton_proto.rpc_types()
    handlers = {}
    for name, (request_type, response_type, streaming) in rpcs.items():
        method = getattr(service, name, None)
        if method is None or streaming:
            continue  # grpc answers UNIMPLEMENTED for a method with no handler
        handlers[name] = grpc.unary_unary_rpc_method_handler(
            _guarded(name, method, token),
            request_deserializer=request_type.FromString,
            response_serializer=response_type.SerializeToString,
        )
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", -1),
            ("grpc.so_reuseport", 0),
        ]
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(triton_proto.SERVICE, handlers),))
    return server


class InferenceService:
    """The RPCs, each a coroutine from a request message to a response message."""

    def __init__(
        self,
        models: ModelRegistry,
        budget: ByteBudget | None = None,
        max_message_bytes: int = protocol.DEFAULT_MAX_BODY_BYTES,
    ) -> None:
        self.models = models
        self.messages = triton_proto.load()
        self.budget = budget or ByteBudget()
        self.max_message_bytes = max_message_bytes
        self._decoders = asyncio.Semaphore(DECODE_THREADS)

    # -- health and metadata ---------------------------------------------------------------------

    async def ServerLive(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return self.messages["ServerLiveResponse"](live=True)

    async def ServerReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return self.messages["ServerReadyResponse"](ready=self.models.ready)

    async def ModelReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            self.models.get(request.name, request.version or None)
        except (ServedModelNotFoundError, ModelNotReadyError):
            return self.messages["ModelReadyResponse"](ready=False)
        return self.messages["ModelReadyResponse"](ready=True)

    async def ServerMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return self._message("ServerMetadataResponse", extensions.server_metadata())

    async def ModelMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        served = self.models.get(request.name, request.version or None)
        document = extensions.model_metadata(served.runner, self.models.versions(request.name))
        return self._message("ModelMetadataResponse", document)

    async def ModelConfig(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        served = self.models.get(request.name, request.version or None)
        return self._message(
            "ModelConfigResponse", {"config": extensions.model_config(served.runner, served.entry.batch)}
        )

    async def ModelStatistics(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        targets = self.models.statistics_targets(request.name, request.version)
        return self._message("ModelStatisticsResponse", extensions.statistics_document(targets))

    # -- repository ------------------------------------------------------------------------------

    async def RepositoryIndex(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        models = [
            extensions.index_entry(entry.name, entry.version, entry.state, entry.reason)
            for entry in self.models.index()
            if not request.ready or entry.state == "READY"
        ]
        return self._message("RepositoryIndexResponse", {"models": models})

    async def RepositoryModelLoad(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        extensions.refuse_load_overrides(request.parameters.keys())
        await self.models.load(request.model_name)
        return self.messages["RepositoryModelLoadResponse"]()

    async def RepositoryModelUnload(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await self.models.unload(request.model_name)
        return self.messages["RepositoryModelUnloadResponse"]()

    # -- inference -------------------------------------------------------------------------------

    async def ModelInfer(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        self.models.check_accepting()
        served = self.models.get(request.model_name, request.model_version or None)
        with self.budget.hold() as held:
            size = request.ByteSize()
            held.grow(size, "this request's message")
            if size <= DECODE_ON_LOOP_BYTES:
                decoded = decode_infer_request(request, self.max_message_bytes)
            else:  # large: off the event loop, a bounded number at a time
                async with self._decoders:
                    decoded = await asyncio.to_thread(decode_infer_request, request, self.max_message_bytes)
            held.grow(sum(array.nbytes for array in decoded.inputs.values()), "its input tensors")
            protocol.check_requested_outputs(decoded, served.output_names, served.name)
            outputs = await served.batcher.submit(
                decoded.inputs,
                priority=served.priority_level(decoded.priority),
                timeout_ms=decoded.timeout_ms,
            )
            held.grow(sum(array.nbytes for array in outputs.values()), "its answer")
            encode = functools.partial(
                encode_infer_response,
                self.messages["ModelInferResponse"],
                served.name,
                served.version,
                outputs,
                decoded,
            )
            if sum(array.nbytes for array in outputs.values()) <= DECODE_ON_LOOP_BYTES:
                return encode()
            async with self._decoders:  # a large answer is built off the loop too
                return await asyncio.to_thread(encode)

    def _message(self, name: str, document: Mapping[str, Any]) -> Any:
        return json_format.ParseDict(document, self.messages[name]())


# -- tensors ---------------------------------------------------------------------------------------


def decode_infer_request(
    request: Any, max_elements: int = protocol.DEFAULT_MAX_BODY_BYTES
) -> protocol.InferRequest:
    """The inputs and options of a ModelInferRequest; every malformed field is INVALID_ARGUMENT.

    ``max_elements`` bounds each input's element count: the server's message limit."""
    if not request.inputs:
        raise InferenceInputError("the request has no inputs; give each model input once")
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise InferenceInputError(
            f"the request has {len(request.inputs)} inputs but {len(raw)} raw_input_contents; give one "
            "raw buffer per input, in the order of the inputs (or none and typed contents)"
        )
    inputs: dict[str, np.ndarray] = {}
    for index, tensor in enumerate(request.inputs):
        if tensor.name in inputs:
            raise InferenceInputError(f"input {tensor.name!r} is given twice; give each input once")
        inputs[tensor.name] = _input_array(tensor, raw[index] if raw else None, max_elements)
    parameters = _parameters(request.parameters)
    return protocol.InferRequest(
        inputs=inputs,
        outputs=tuple(protocol.RequestedOutput(output.name, None) for output in request.outputs) or None,
        id=request.id or None,
        priority=_non_negative(parameters, "priority"),
        timeout_us=_non_negative(parameters, "timeout"),
    )


def _input_array(tensor: Any, raw: bytes | None, max_elements: int) -> np.ndarray:
    name = tensor.name or "(unnamed)"
    if any(dim < 0 for dim in tensor.shape):
        raise InferenceInputError(f"input {name!r} has shape {list(tensor.shape)}; dims must be non-negative")
    shape = tuple(int(dim) for dim in tensor.shape)
    dtype = dtype_from_datatype(tensor.datatype)
    count = protocol.element_count(shape, name, max_elements)  # Python ints: an int64 product would wrap
    has_contents = tensor.HasField("contents") and bool(tensor.contents.ListFields())
    if raw is not None:
        if has_contents:
            raise InferenceInputError(
                f"input {name!r} has both typed contents and raw_input_contents; send its values one way"
            )
        return protocol.array_from_bytes(memoryview(raw), name, tensor.datatype, dtype, shape, count)
    field = CONTENTS_FIELDS.get(tensor.datatype)
    if field is None:
        raise InferenceInputError(
            f"input {name!r} is {tensor.datatype}, which has no typed contents in the protocol; send it "
            "in raw_input_contents"
        )
    values = getattr(tensor.contents, field)  # protobuf's repeated field: counted before anything is copied
    if len(values) != count:
        raise InferenceInputError(
            f"input {name!r} has shape {list(shape)}, which needs {count} values, but its "
            f"{field} holds {len(values)}"
        )
    if tensor.datatype == "BYTES":
        array = np.empty(count, dtype=object)
        array[:] = list(values)
        return array.reshape(shape)
    # One element at a time into the field's own wide type (no Python list of the whole tensor),
    # then the range check for narrower integer datatypes, in that wide type.
    wide: np.ndarray = np.fromiter(values, dtype=_FIELD_DTYPES[field], count=count)
    if dtype.kind in "iu" and count:
        info = np.iinfo(dtype)
        low, high = int(wide.min()), int(wide.max())
        if low < info.min or high > info.max:
            raise InferenceInputError(
                f"{tensor.datatype} input {name!r} takes integers from {info.min} to {info.max}, got "
                f"{low if low < info.min else high}"
            )
    return wide.astype(dtype, copy=False).reshape(shape)


# The numpy type of each typed-contents field of the protocol.
_FIELD_DTYPES = {
    "bool_contents": np.bool_,
    "int_contents": np.int32,
    "int64_contents": np.int64,
    "uint_contents": np.uint32,
    "uint64_contents": np.uint64,
    "fp32_contents": np.float32,
    "fp64_contents": np.float64,
}


def _parameters(parameters: Mapping[str, Any]) -> dict[str, Any]:
    """Request parameters as Python values (``InferParameter`` is a oneof)."""
    values: dict[str, Any] = {}
    for key, parameter in parameters.items():
        choice = parameter.WhichOneof("parameter_choice")
        values[key] = getattr(parameter, choice) if choice else None
    return values


def _non_negative(parameters: Mapping[str, Any], key: str) -> int:
    value = parameters.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        unit = " (microseconds; 0: none)" if key == "timeout" else " (0: the default, 1: highest)"
        raise InferenceInputError(
            f"request parameter {key!r} must be a non-negative integer{unit}, got {value!r}"
        )
    return value


def encode_infer_response(
    response_type: type[Any],
    model_name: str,
    model_version: str,
    outputs: Mapping[str, np.ndarray],
    request: protocol.InferRequest,
) -> Any:
    """A ModelInferResponse with every output (or those asked for) in ``raw_output_contents``."""
    names: Sequence[str] = (
        list(outputs) if request.outputs is None else [output.name for output in request.outputs]
    )
    response = response_type(model_name=model_name, model_version=model_version, id=request.id or "")
    for name in names:
        array = outputs[name]
        response.outputs.add(name=name, datatype=datatype_from_dtype(array.dtype), shape=array.shape)
        response.raw_output_contents.append(protocol.tensor_bytes(array))
    return response


# -- errors and the token --------------------------------------------------------------------------


def _guarded(name: str, method: Handler, token: str | None) -> Handler:
    """``method`` with the bearer-token check (not for health) and errors turned into gRPC statuses."""
    expected = f"Bearer {token}".encode() if token and name not in HEALTH_METHODS else None

    async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if expected is not None:
            given = dict(context.invocation_metadata() or ()).get("authorization", "")
            if not hmac.compare_digest(str(given).encode(), expected):
                await context.abort(
                    grpc.StatusCode.UNAUTHENTICATED,
                    "missing or wrong bearer token: send metadata 'authorization: Bearer <token>'",
                )
        try:
            return await method(request, context)
        except HoneError as exc:  # its status, from hone.errors; serving errors are logged where they arise
            if exc.http_status >= 500 and not isinstance(exc, ServingError):
                logger.warning("gRPC %s failed: %s", name, exc)
            code, message = grpc.StatusCode[exc.grpc_code], str(exc)
        except Exception as exc:  # a bug: log it whole, answer one line
            logger.error("gRPC %s failed", name, exc_info=exc)
            code, message = grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}"
        await context.abort(code, message)

    return call
