"""The tokenizer that travels in the exported model's metadata (the ``tokenizers`` library's JSON).

``TextStream`` turns tokens into text as they come: a byte-level tokenizer can split one character
over several tokens, so text is only emitted once it decodes without a replacement character.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import tokenizers


class Tokenizer:
    def __init__(self, backend: tokenizers.Tokenizer) -> None:
        self._backend = backend

    @classmethod
    def from_json(cls, text: str) -> Tokenizer:
        return cls(tokenizers.Tokenizer.from_str(text))

    def encode(self, text: str) -> list[int]:
        return list(self._backend.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: list[int]) -> str:
        return str(self._backend.decode(ids, skip_special_tokens=True))

    def token_id(self, token: str) -> int | None:
        found = self._backend.token_to_id(token)
        return None if found is None else int(found)


@dataclass
class TextStream:
    """The text of a growing token list, handed out in pieces that never split a character."""

    tokenizer: Tokenizer
    ids: list[int] = field(default_factory=list)
    emitted: str = ""

    def push(self, token: int) -> str:
        self.ids.append(token)
        text = self.tokenizer.decode(self.ids)
        if text.endswith("\ufffd"):
            return ""
        piece = text[len(self.emitted) :] if text.startswith(self.emitted) else ""
        self.emitted = text
        return piece

    def text(self) -> str:
        return self.tokenizer.decode(self.ids)


__all__ = ["TextStream", "Tokenizer"]
