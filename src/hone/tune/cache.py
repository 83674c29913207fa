"""The tuner's cache of measured points: an embedded SQLite file under hone's cache folder.

Every measurement ``hone tune`` makes (a variant's gate, a race, a curve, a load level) is stored
under a key that names everything it depends on: the model's bytes, the data, the machine, hone's
version, what was measured and how long. A second run with the same model finds its points here and
measures only what is missing, so a larger ``--budget-min`` continues the search instead of
starting over. Values are JSON; a corrupt or foreign file is set aside (renamed) with a warning,
never trusted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

SCHEMA = 1
CACHE_FILE = "tune.sqlite"


def key_of(*parts: object) -> str:
    """A stable key for the JSON of ``parts`` (dataclasses go in as their ``to_json``/dict form)."""
    text = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


class PointCache:
    """Measured values by key, in one SQLite file (``None``: a cache that keeps nothing)."""

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path is not None else None
        self.hits = 0
        self._db: sqlite3.Connection | None = None
        if self.path is not None:
            self._db = self._open(self.path)

    def _open(self, path: Path) -> sqlite3.Connection:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            db = sqlite3.connect(path)
            db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
            db.execute(
                "CREATE TABLE IF NOT EXISTS points (key TEXT PRIMARY KEY, kind TEXT, value TEXT, at REAL)"
            )
            row = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
            if row is None:
                db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA),))
                db.commit()
            elif row[0] != str(SCHEMA):
                raise sqlite3.DatabaseError(f"schema {row[0]}, expected {SCHEMA}")
            return db
        except sqlite3.DatabaseError as exc:
            aside = path.with_suffix(f".unreadable-{int(time.time())}")
            logger.warning(
                "tune cache %s is unreadable (%s); moved to %s, starting a new one", path, exc, aside
            )
            path.rename(aside)
            return self._open(path)

    def get(self, key: str) -> Any | None:
        if self._db is None:
            return None
        row = self._db.execute("SELECT value FROM points WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        self.hits += 1
        return json.loads(row[0])

    def put(self, key: str, kind: str, value: Any) -> None:
        if self._db is None:
            return
        self._db.execute(
            "INSERT OR REPLACE INTO points VALUES (?, ?, ?, ?)", (key, kind, json.dumps(value), time.time())
        )
        self._db.commit()

    def count(self) -> int:
        if self._db is None:
            return 0
        return int(self._db.execute("SELECT COUNT(*) FROM points").fetchone()[0])

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
