"""Where hone keeps its cache, and the one rule for writing outputs: never overwrite without --force."""

from __future__ import annotations

import os
from pathlib import Path

from hone.errors import OutputExistsError


def cache_dir() -> Path:
    """The per-user cache (zoo exports, trained weights, machine ceilings).

    ``$HONE_CACHE_DIR`` wins; otherwise ``$XDG_CACHE_HOME/hone`` or ``~/.cache/hone``.
    """
    explicit = os.environ.get("HONE_CACHE_DIR")
    if explicit:
        root = Path(explicit)
    else:
        root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "hone"
    root.mkdir(parents=True, exist_ok=True)
    return root


def ensure_writable(path: str | os.PathLike[str], *, force: bool) -> Path:
    """Return ``path`` as a Path, creating its parent folder, or refuse if it exists and not ``force``."""
    target = Path(path)
    if target.exists() and not force:
        raise OutputExistsError(
            f"{target} already exists; pass --force to overwrite it or choose another path",
            path=str(target),
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    return target
