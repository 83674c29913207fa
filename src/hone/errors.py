"""The one exception tree of hone. Every error a user can cause is a HoneError with a message
that says what was wrong and what to do; the CLI prints it as one line and exits with code 2.

    HoneError                        500  (http_status, grpc_code on every class)
    ├── InputError                   400  something the user gave is unusable
    │   ├── ModelNotFoundError       a path that does not exist
    │   ├── UnknownModelError        a name that is neither a file nor a zoo model
    │   ├── InvalidModelError        a file that is not (valid) ONNX, truncated or corrupt
    │   ├── ExternalDataError        external data missing or pointing outside the model folder
    │   ├── FactoryError             a `file.py:factory` that cannot be imported, raises, or returns no module
    │   ├── ShapeError               an input shape that does not fit the model
    │   ├── InventedInputsError      the model does not run on inputs hone invents: give --data
    │   ├── OptionError              a flag value outside its contract
    │   └── RepositoryError          a model repository folder that breaks its layout or config
    ├── OutputExistsError            an output would overwrite an existing file (use --force)
    ├── ProviderUnavailableError     an execution provider not available in this onnxruntime
    ├── ExecutionError               onnxruntime or torch failed while running a model
    │   └── InferenceExecutionError  500  a served batch failed (also a ServingError)
    └── ServingError                 500  hone serve's answer to one request
        ├── InferenceInputError      400  input names, datatypes, shapes or sizes that do not fit
        ├── ModelControlError        403  repository load/unload without --model-control-mode explicit
        ├── ServedModelNotFoundError 404  no served model (or version) of that name
        ├── ModelNotReadyError       503  the model is loading, warming up or unloaded
        ├── QueueFullError           503  max_queue_size requests already wait; retry later
        ├── ServerBusyError          503  the requests held now would pass --max-inflight-bytes
        ├── RequestTooLargeError     413  a body or a tensor above the server's limits
        ├── BodyTimeoutError         408  the request body did not arrive within --body-timeout-s
        ├── RequestTimeoutError      503  the request's timeout expired while it was queued
        └── ServerShuttingDownError  503  the server stopped accepting requests (SIGTERM)

Context is passed as keyword arguments and kept on the exception (``exc.context``) so callers can
inspect it; third-party errors are translated at the boundary with ``raise ... from exc``.

Every error carries the status the serving protocols answer it with: ``http_status`` for HTTP and
``grpc_code`` (a ``grpc.StatusCode`` name, so this module needs no grpc) for gRPC; 500 / INTERNAL
on HoneError, 400 / INVALID_ARGUMENT on InputError, each ServingError its own. The HTTP routes
(``hone.serve.http``, whose error answer Ray's replicas use too) and the gRPC service read them;
nothing else maps an error to a status. Statuses follow Triton, so clients that retry on its
answers (perf_analyzer, tritonclient) behave the same here: every "not now, retry" condition is
503 / UNAVAILABLE, a queue timeout included (Triton answers it with UNAVAILABLE "Request timeout
expired", not 504: 504 means an upstream gateway timed out, which a client would blame on a proxy).
"""

from __future__ import annotations

from typing import Any, Literal

# The grpc.StatusCode names hone's errors answer with (the gRPC service looks each up at its boundary).
GrpcCode = Literal[
    "INTERNAL",
    "INVALID_ARGUMENT",
    "PERMISSION_DENIED",
    "NOT_FOUND",
    "UNAVAILABLE",
    "RESOURCE_EXHAUSTED",
    "DEADLINE_EXCEEDED",
]


class HoneError(Exception):
    """Base of every error hone raises on purpose. ``str(exc)`` is one line a user can act on."""

    exit_code = 2
    http_status: int = 500
    grpc_code: GrpcCode = "INTERNAL"

    def __init__(self, message: str, **context: Any) -> None:
        super().__init__(" ".join(message.split()))
        self.context = context


class InputError(HoneError):
    """Something the user gave (a model, a path, a shape, an option) is unusable."""

    http_status = 400
    grpc_code = "INVALID_ARGUMENT"


class ModelNotFoundError(InputError):
    pass


class UnknownModelError(InputError):
    pass


class InvalidModelError(InputError):
    pass


class ExternalDataError(InputError):
    pass


class FactoryError(InputError):
    pass


class ShapeError(InputError):
    pass


class InventedInputsError(InputError):
    """The model fails on every input hone can invent from its graph; only real samples will do."""


class OptionError(InputError):
    pass


class RepositoryError(InputError):
    pass


class OutputExistsError(HoneError):
    pass


class ProviderUnavailableError(HoneError):
    pass


class ExecutionError(HoneError):
    pass


class ServingError(HoneError):
    """An error `hone serve` answers one request with; the server keeps serving the others."""


class InferenceExecutionError(ServingError, ExecutionError):
    """The batch a request ran in failed (the model raised, or returned the wrong number of rows)."""


class InferenceInputError(ServingError):
    """A request's input names, datatypes, shapes, sizes or parameters do not fit the model."""

    http_status = 400
    grpc_code = "INVALID_ARGUMENT"


class ModelControlError(ServingError):
    """Repository load/unload asked of a server started without explicit model control."""

    http_status = 403
    grpc_code = "PERMISSION_DENIED"


class ServedModelNotFoundError(ServingError):
    """No served model, or no version of it, has the requested name."""

    http_status = 404
    grpc_code = "NOT_FOUND"


class ModelNotReadyError(ServingError):
    """The model exists but cannot take requests yet (loading, warming up) or any more (unloaded)."""

    http_status = 503
    grpc_code = "UNAVAILABLE"


class QueueFullError(ServingError):
    """max_queue_size requests already wait at this priority; refused at once, retry later."""

    http_status = 503
    grpc_code = "UNAVAILABLE"


class ServerBusyError(ServingError):
    """The bytes of the requests held now (read, queued or running) would pass the server's budget."""

    http_status = 503
    grpc_code = "RESOURCE_EXHAUSTED"


class RequestTooLargeError(ServingError):
    """A request body, or a tensor its shape describes, above the server's limits."""

    http_status = 413
    grpc_code = "RESOURCE_EXHAUSTED"


class BodyTimeoutError(ServingError):
    """The request body did not arrive in time; the connection is closed."""

    http_status = 408
    grpc_code = "DEADLINE_EXCEEDED"


class RequestTimeoutError(ServingError):
    """The request's timeout expired while it waited in the queue; it never ran."""

    http_status = 503
    grpc_code = "UNAVAILABLE"


class ServerShuttingDownError(ServingError):
    """The server stopped accepting requests; those accepted before are still answered."""

    http_status = 503
    grpc_code = "UNAVAILABLE"
