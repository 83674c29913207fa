"""The message classes of Triton's gRPC service (``inference.GRPCInferenceService``), built at run time.

The schema is the one tritonclient itself is built from: ``scripts/fetch_triton_proto.py`` (run by
``make setup``) takes the serialized ``grpc_service.proto`` and ``model_config.proto`` out of the
pinned tritonclient wheel and writes them as a ``FileDescriptorSet`` next to this module. Here they
go into a private descriptor pool (not protobuf's default one, so another copy of the same files
in the process cannot clash) and protobuf's ``message_factory`` makes the classes: no protoc output
is kept in the repository, and nothing depends on the protobuf version the wheel was made with.

    messages = load()
    request = messages["ModelInferRequest"]()
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from hone.errors import OptionError

SCHEMA_PATH = Path(__file__).with_name("triton_grpc.binpb")
PACKAGE = "inference"
SERVICE = f"{PACKAGE}.GRPCInferenceService"


@functools.cache
def load(path: Path = SCHEMA_PATH) -> dict[str, type[Any]]:
    """Every message of the ``inference`` package by its short name (``ModelInferRequest``, ...)."""
    if not path.is_file():
        raise OptionError(
            f"hone serve's gRPC schema {path} is missing; run `make setup` (or python "
            f"scripts/fetch_triton_proto.py --out {path}) to write it"
        )
    descriptor_set = descriptor_pb2.FileDescriptorSet.FromString(path.read_bytes())
    pool = descriptor_pool.DescriptorPool()
    for file in descriptor_set.file:
        pool.Add(file)
    messages: dict[str, type[Any]] = {}
    for file in descriptor_set.file:
        for name in pool.FindFileByName(file.name).message_types_by_name:
            descriptor = pool.FindMessageTypeByName(f"{PACKAGE}.{name}")
            messages[name] = message_factory.GetMessageClass(descriptor)
    return messages


def rpc_types(path: Path = SCHEMA_PATH) -> dict[str, tuple[type[Any], type[Any], bool]]:
    """Each RPC of the service: (request class, response class, whether the response streams)."""
    messages = load(path)
    service = next(iter(messages.values())).DESCRIPTOR.file.pool.FindServiceByName(SERVICE)
    return {
        method.name: (
            messages[method.input_type.name],
            messages[method.output_type.name],
            method.server_streaming,
        )
        for method in service.methods
    }
