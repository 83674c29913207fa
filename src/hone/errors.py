"""The one exception tree of hone. Every error a user can cause is a HoneError with a message
that says what was wrong and what to do; the CLI prints it as one line and exits with code 2.

    HoneError
    ├── InputError                   something the user gave is unusable
    │   ├── ModelNotFoundError       a path that does not exist
    │   ├── UnknownModelError        a name that is neither a file nor a zoo model
    │   ├── InvalidModelError        a file that is not (valid) ONNX, truncated or corrupt
    │   ├── ExternalDataError        external data missing or pointing outside the model folder
    │   ├── FactoryError             a `file.py:factory` that cannot be imported, raises, or returns no module
    │   ├── ShapeError               an input shape that does not fit the model
    │   └── OptionError              a flag value outside its contract
    ├── OutputExistsError            an output would overwrite an existing file (use --force)
    ├── ProviderUnavailableError     an execution provider not available in this onnxruntime
    └── ExecutionError               onnxruntime or torch failed while running a model

Context is passed as keyword arguments and kept on the exception (``exc.context``) so callers can
inspect it; third-party errors are translated at the boundary with ``raise ... from exc``.
"""

from __future__ import annotations

from typing import Any


class HoneError(Exception):
    """Base of every error hone raises on purpose. ``str(exc)`` is one line a user can act on."""

    exit_code = 2

    def __init__(self, message: str, **context: Any) -> None:
        super().__init__(" ".join(message.split()))
        self.context = context


class InputError(HoneError):
    """Something the user gave (a model, a path, a shape, an option) is unusable."""


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


class OptionError(InputError):
    pass


class OutputExistsError(HoneError):
    pass


class ProviderUnavailableError(HoneError):
    pass


class ExecutionError(HoneError):
    pass
