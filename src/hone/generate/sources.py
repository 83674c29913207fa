"""Which models are generative, and where a decoder comes from: an exported .onnx file (its
metadata says) or a user's ``file.py:factory`` returning a transformers causal LM (or a
``(model, tokenizer)`` pair)."""

from __future__ import annotations

import importlib
import logging
import tempfile
from pathlib import Path

from hone import zoo
from hone.errors import ModelNotFoundError, OptionError
from hone.generate.export import DecoderSource, decoder_source, export_checked
from hone.generate.types import LAYOUT_KEY
from hone.model import Model, load_onnx_file
from hone.sources import load_zoo, split_factory_ref

logger = logging.getLogger(__name__)


def generative_model(text: str) -> Model | None:
    """The decoder ``text`` names, or None when it names something else (a non-generative model)."""
    path = Path(text).expanduser()
    if path.is_file() and path.suffix == ".onnx":
        return load_onnx_file(path) if _has_layout(path) else None
    if text in zoo.names() and zoo.get(text).export_onnx is not None:  # e.g. tiny_gpt
        return load_zoo(text)
    if split_factory_ref(text) is not None:
        return load_onnx_file(export_factory_decoder(text), name=Path(text.partition(":")[0]).stem)
    return None


def is_generative_source(source: object) -> bool:
    """Whether ``source`` names a decoder, decided without exporting anything: a Model or .onnx file
    with hone's KV-cache layout, a generative zoo model, or a ``file.py:factory`` (a factory without
    ``--input-shape`` can only be a causal LM)."""
    if isinstance(source, Model):
        return LAYOUT_KEY in source.ir.metadata_props
    text = str(source)
    path = Path(text).expanduser()
    if path.is_file() and path.suffix == ".onnx":
        return _has_layout(path)
    if text in zoo.names():
        return zoo.get(text).export_onnx is not None
    return split_factory_ref(text) is not None


def _has_layout(path: Path) -> bool:
    """Whether the file's metadata has hone's KV-cache layout; an unreadable file is left to the
    caller's own loader (and its error message)."""
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001  # any parse failure: not ours to report here
        return False
    if any(p.key == LAYOUT_KEY for p in proto.metadata_props):
        return True
    if any(i.name.startswith("past_key_values.") for i in proto.graph.input):
        logger.warning(
            "%s takes past_key_values but has no hone KV-cache layout, so it is treated as a plain model; "
            "adopt it as a decoder with `hone export %s --target generate -o decoder.onnx`",
            path,
            path,
        )
    return False


def load_source(text: str) -> DecoderSource:
    """The PyTorch side of a decoder: a ``file.py:factory``."""
    ref = split_factory_ref(text)
    if ref is None:
        raise ModelNotFoundError(
            f"{text!r} is not a decoder source; give file.py:factory (a transformers causal LM) ",
            source=text,
        )
    from hone.torch_export import import_factory

    file, factory_name = ref
    file_path = Path(file).expanduser()
    if not file_path.is_file():
        raise ModelNotFoundError(f"{file}: no such Python file; check the path", source=file)
    factory = import_factory(file_path, factory_name)
    from hone.errors import FactoryError

    try:
        built = factory()
    except Exception as exc:  # the user's code: any error becomes one line
        raise FactoryError(f"{text}() raised {type(exc).__name__}: {exc}; fix the factory") from exc
    return decoder_source(built, text)


def export_to(text: str, path: Path, *, context: int | None = None, force: bool = False) -> str:
    """``hone export TEXT --target generate -o PATH``: a ``file.py:factory`` or a generative zoo model
    exported with its KV cache and checked, or a decoder .onnx from elsewhere adopted
    (``hone.generate.adopt``); returns the line to show."""
    source_file = Path(text).expanduser()
    if source_file.suffix == ".onnx" and source_file.is_file():
        from hone.generate.adopt import adopt

        return adopt(source_file, path, context=context, force=force).line()
    if context is not None:
        raise OptionError("--context is for adopting a decoder .onnx; a factory's config gives its own")
    if text in zoo.names() and zoo.get(text).export_onnx is not None:
        source = importlib.import_module(zoo.module_of(text)).source
        return export_checked(decoder_source(source(), text), path).line()
    return export_checked(load_source(text), path).line()


def export_factory_decoder(text: str) -> Path:
    """The factory's decoder exported to a temporary file, refused unless its greedy tokens equal
    PyTorch's (``export_checked``)."""
    folder = Path(tempfile.mkdtemp(prefix="hone-generate-"))
    path = folder / "decoder.onnx"
    export_checked(load_source(text), path)
    return path


__all__ = ["export_factory_decoder", "export_to", "generative_model", "is_generative_source", "load_source"]
