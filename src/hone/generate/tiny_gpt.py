"""tiny_gpt, a zoo model: a small GPT-2 trained on first use on text that ships with Python itself.

No decoder weights usable offline ship in a PyPI wheel that hone may pin, so hone trains one. The
corpus is ``pydoc_data.topics`` (the language reference behind ``help()``) plus the docstrings of a
fixed list of standard-library modules and their public members. Documents are split by position:
every ``HELDOUT_EVERY``-th document is held out, never trained on, and is what perplexity (here and
in ``hone quantize``'s generative gate) is measured on.

The tokenizer is a byte-level BPE of ``VOCAB`` tokens (id 0 = ``<|endoftext|>``, the EOS), trained
on the training documents only. The model is GPT-2 (``LAYERS`` x ``WIDTH``, ``HEADS`` heads, context
``CONTEXT``), trained for ``STEPS`` AdamW steps on random windows (seed 0), bounded by
``TIME_LIMIT_S`` seconds: if a slow machine reaches it first, training stops there and the record
says how many steps were done. Weights, tokenizer and the measured record are cached under
``cache_dir() / "zoo"`` in a folder named by a digest of the corpus and the hyper-parameters, so a
different Python (different docstrings) trains its own.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from hone.generate.export import decoder_source, export_checked, kv_cache_module
from hone.paths import cache_dir
from hone.specs import TensorSpec
from hone.zoo.types import ZooModel

logger = logging.getLogger(__name__)

NAME = "tiny_gpt"
VERSION = "1"
SEED = 0
VOCAB = 2048
LAYERS = 4
WIDTH = 256
HEADS = 4
CONTEXT = 256
SEQUENCE = 128  # training window
BATCH = 16
STEPS = 200
LEARNING_RATE = 2e-3
WARMUP = 20
TIME_LIMIT_S = 170.0  # the bound is 3 minutes on 2 cores; the rest is tokenizer and export
HELDOUT_EVERY = 10
HELDOUT_WINDOWS = 48  # windows of SEQUENCE tokens perplexity is measured on
EOS = "<|endoftext|>"

# Standard-library modules whose docstrings join pydoc's topics (sorted; pure Python, always there).
MODULES = (
    "abc", "argparse", "ast", "asyncio", "base64", "bisect", "calendar", "collections", "concurrent.futures",
    "configparser", "contextlib", "copy", "csv", "dataclasses", "datetime", "decimal", "difflib", "email",
    "enum", "fnmatch", "fractions", "functools", "getopt", "gettext", "glob", "gzip", "hashlib", "heapq",
    "hmac", "html", "http.client", "http.server", "imaplib", "inspect", "io", "ipaddress", "itertools",
    "json", "locale", "logging", "mailbox", "mimetypes", "numbers", "operator", "optparse", "os",
    "pathlib", "pickle", "pkgutil", "platform", "pprint", "queue", "random", "re", "sched", "secrets",
    "selectors", "shlex", "shutil", "smtplib", "socket", "socketserver", "statistics", "string",
    "subprocess", "tarfile", "tempfile", "textwrap", "threading", "timeit", "tokenize", "traceback",
    "turtle", "typing", "unittest", "urllib.parse", "urllib.request", "uuid", "warnings", "weakref",
    "xml.dom.minidom", "zipfile",
)  # fmt: skip


@dataclass(frozen=True)
class TrainingRecord:
    """What training measured, cached as JSON next to the weights."""

    heldout_perplexity: float
    heldout_tokens: int
    train_tokens: int
    train_documents: int
    heldout_documents: int
    steps: int
    seconds: float
    corpus_digest: str
    version: str


@dataclass(frozen=True)
class Corpus:
    train: list[str]
    heldout: list[str]
    digest: str


@cache
def corpus() -> Corpus:
    """The documents, in a fixed order, split into training and held-out ones."""
    import pydoc_data.topics

    documents = [pydoc_data.topics.topics[key] for key in sorted(pydoc_data.topics.topics)]
    documents += _docstrings()
    # stripped, long enough to teach something, and each once (classes share inherited docstrings,
    # which would otherwise sit on both sides of the split)
    documents = list(dict.fromkeys(d.strip() for d in documents if len(d.strip()) >= 80))
    heldout = documents[HELDOUT_EVERY - 1 :: HELDOUT_EVERY]
    train = [d for i, d in enumerate(documents) if i % HELDOUT_EVERY != HELDOUT_EVERY - 1]
    digest = hashlib.sha256("\x00".join(documents).encode()).hexdigest()[:12]
    return Corpus(train, heldout, digest)


def _docstrings() -> list[str]:
    found: list[str] = []
    for name in MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:  # a trimmed Python without e.g. turtle: the digest records the difference
            continue
        found.append(inspect.getdoc(module) or "")
        for member_name in sorted(vars(module)):
            member = vars(module)[member_name]
            if member_name.startswith("_") or getattr(member, "__module__", None) != module.__name__:
                continue
            found.append(inspect.getdoc(member) or "")
    return found


def train_tokenizer(documents: list[str]) -> Any:
    """A byte-level BPE of VOCAB tokens, id 0 the end-of-text token, trained on ``documents``."""
    import tokenizers
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tokenizer = tokenizers.Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(documents, trainer)
    return tokenizer


def token_stream(tokenizer: Any, documents: list[str]) -> np.ndarray:
    """The documents' tokens end to end, each followed by the end-of-text token."""
    eos = tokenizer.token_to_id(EOS)
    ids: list[int] = []
    for encoding in tokenizer.encode_batch(documents, add_special_tokens=False):
        ids += [*encoding.ids, eos]
    return np.asarray(ids, dtype=np.int64)


def new_model() -> Any:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(SEED)
    config = GPT2Config(
        vocab_size=VOCAB,
        n_positions=CONTEXT,
        n_embd=WIDTH,
        n_layer=LAYERS,
        n_head=HEADS,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=0,
        eos_token_id=0,
    )
    return GPT2LMHeadModel(config)


def heldout_windows(stream: np.ndarray) -> np.ndarray:
    """Non-overlapping windows of SEQUENCE tokens from the held-out stream: [n, SEQUENCE]."""
    count = min(HELDOUT_WINDOWS, len(stream) // SEQUENCE)
    return stream[: count * SEQUENCE].reshape(count, SEQUENCE)


def perplexity(model: Any, windows: np.ndarray) -> float:
    """exp of the mean next-token loss over ``windows`` (each scored on its own)."""
    import torch

    total, count = 0.0, 0
    with torch.inference_mode():
        for start in range(0, len(windows), 8):
            ids = torch.from_numpy(windows[start : start + 8])
            logits = model(input_ids=ids).logits[:, :-1]
            loss = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="sum"
            )
            total += float(loss)
            count += ids[:, 1:].numel()
    return math.exp(total / count)


def train(model: Any, stream: np.ndarray) -> tuple[int, float]:
    """AdamW with warmup and cosine decay on random windows; returns (steps done, seconds)."""
    import torch

    generator = torch.Generator().manual_seed(SEED)
    tokens = torch.from_numpy(stream)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=0.01)

    def rate(step: int) -> float:
        if step < WARMUP:
            return (step + 1) / WARMUP
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - WARMUP) / (STEPS - WARMUP)))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, rate)
    model.train()
    started = time.perf_counter()
    done = 0
    for step in range(STEPS):
        starts = torch.randint(0, len(tokens) - SEQUENCE, (BATCH,), generator=generator)
        batch = torch.stack([tokens[s : s + SEQUENCE] for s in starts.tolist()])
        loss = model(input_ids=batch, labels=batch).loss  # the model shifts the labels itself
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        done = step + 1
        if step % 50 == 0:
            logger.info("tiny_gpt step %d/%d: loss %.3f", step, STEPS, float(loss.detach()))
        if time.perf_counter() - started > TIME_LIMIT_S:
            logger.warning("tiny_gpt: stopped at step %d of %d (the %.0f s bound)", done, STEPS, TIME_LIMIT_S)
            break
    model.eval()
    return done, time.perf_counter() - started


def _folder() -> Path:
    settings = (
        f"{VERSION}-{VOCAB}-{LAYERS}x{WIDTH}-{HEADS}-{CONTEXT}-{SEQUENCE}-{BATCH}-{STEPS}-{LEARNING_RATE}"
    )
    tag = hashlib.sha256(f"{settings}-{corpus().digest}".encode()).hexdigest()[:10]
    return cache_dir() / "zoo" / f"{NAME}-v{VERSION}-{tag}"


@dataclass(frozen=True)
class Trained:
    model: Any  # the GPT2LMHeadModel, eval mode
    tokenizer: Any  # tokenizers.Tokenizer
    record: TrainingRecord


@cache
def trained() -> Trained:
    """The trained model, its tokenizer and record: from the cache, or trained now (first use)."""
    import tokenizers
    import torch

    folder = _folder()
    weights, tokenizer_file, record_file = (folder / n for n in ("model.pt", "tokenizer.json", "record.json"))
    model = new_model()
    if weights.exists() and tokenizer_file.exists() and record_file.exists():
        model.load_state_dict(torch.load(weights, weights_only=True))
        model.eval()
        record = TrainingRecord(**json.loads(record_file.read_text()))
        return Trained(model, tokenizers.Tokenizer.from_file(str(tokenizer_file)), record)
    text = corpus()
    logger.info("training tiny_gpt on first use (at most %.0f s); cached in %s", TIME_LIMIT_S, folder)
    tokenizer = train_tokenizer(text.train)
    train_stream, heldout_stream = token_stream(tokenizer, text.train), token_stream(tokenizer, text.heldout)
    steps, seconds = train(model, train_stream)
    windows = heldout_windows(heldout_stream)
    record = TrainingRecord(
        heldout_perplexity=round(perplexity(model, windows), 3),
        heldout_tokens=int(windows.size),
        train_tokens=len(train_stream),
        train_documents=len(text.train),
        heldout_documents=len(text.heldout),
        steps=steps,
        seconds=round(seconds, 1),
        corpus_digest=text.digest,
        version=VERSION,
    )
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), folder / "model.pt.partial")
    tokenizer.save(str(tokenizer_file))
    record_file.write_text(json.dumps(asdict(record), indent=2))
    (folder / "model.pt.partial").replace(weights)  # last: its presence means the folder is whole
    logger.info(
        "tiny_gpt: held-out perplexity %.2f after %d steps (%.0f s)",
        record.heldout_perplexity,
        steps,
        seconds,
    )
    return Trained(model, tokenizer, record)


def heldout_texts() -> list[str]:
    """The held-out documents (never trained on): perplexity's text for any decoder's tokenizer."""
    return corpus().heldout


def source() -> tuple[Any, Any]:
    """``(model, tokenizer)``, what a ``file.py:factory`` of a decoder returns."""
    found = trained()
    return found.model, found.tokenizer


def export_onnx(path: Path) -> None:
    """The decoder with its KV cache (``hone export --target generate``'s graph), checked like it."""
    export_checked(decoder_source(source(), NAME), path)


def measured_provenance() -> dict[str, str]:
    record = trained().record
    return {
        "heldout_perplexity": f"{record.heldout_perplexity:.2f} on {record.heldout_tokens} held-out tokens",
        "training": f"{record.steps} steps, {record.seconds:.0f} s, {record.train_tokens} tokens",
    }


def _provenance() -> dict[str, str]:
    return {
        "architecture": f"GPT-2, {LAYERS} layers x {WIDTH}, {HEADS} heads, context {CONTEXT}",
        "data": "pydoc_data.topics + stdlib docstrings (ships with Python); every 10th document held out",
        "tokenizer": f"byte-level BPE, {VOCAB} tokens, trained on the training documents",
        "seed": str(SEED),
    }


TINY_GPT = ZooModel(
    name=NAME,
    description="a small GPT-2 trained on first use on Python's own documentation (generative)",
    inputs=(
        TensorSpec("input_ids", "int64", ("batch", "sequence"), value_range=(0, VOCAB)),
        TensorSpec("attention_mask", "int64", ("batch", "total_sequence"), value_range=(1, 2)),
        TensorSpec("position_ids", "int64", ("batch", "sequence"), value_range=(0, CONTEXT // 2)),
    ),
    output_names=("logits",),
    build_module=lambda: kv_cache_module(trained().model, LAYERS),
    default_dims={"sequence": 16, "past_sequence": 0, "total_sequence": 16},
    provenance=_provenance(),
    measured_provenance=measured_provenance,
    export_onnx=export_onnx,
    version=_folder().name.removeprefix(f"{NAME}-v"),  # the weights' digest: new weights, new export
)
