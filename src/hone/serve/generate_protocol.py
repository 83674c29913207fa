"""What generation clients send and get back, as plain functions (no HTTP here).

Three request forms, each checked with a 400 that says what was wrong:

- the KServe v2 / Triton generate extension: ``{"text_input": ..., "parameters": {...}}`` (or
  ``"input_ids"``: token ids, for a model without a tokenizer);
- OpenAI's ``/v1/completions``: ``prompt`` as text or token ids;
- OpenAI's ``/v1/chat/completions``: ``messages``, rendered with the model's chat template, or with
  hone's plain one (``role: content`` lines, then ``assistant:``) when the model has none.

``StopText`` finds the ``stop`` strings in streamed text; it holds back the few characters that
could still begin one, so that no client ever sees a stop string.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hone.errors import InferenceInputError
from hone.generate.engine import GenerationRequest
from hone.generate.sampling import SamplingParams
from hone.generate.tokenizer import Tokenizer

DEFAULT_MAX_TOKENS = 16  # OpenAI's default for completions
ROLES = ("system", "user", "assistant", "tool", "developer")


@dataclass(frozen=True)
class ParsedRequest:
    request: GenerationRequest
    stop: tuple[str, ...]
    stream: bool
    include_usage: bool = False


def _bad(message: str) -> InferenceInputError:
    return InferenceInputError(message)


def _number(body: dict[str, Any], key: str, default: float, kind: type = float) -> Any:
    value = body.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _bad(f"'{key}' must be a number, got {type(value).__name__}")
    if kind is int:
        if int(value) != value:
            raise _bad(f"'{key}' must be an integer, got {value}")
        return int(value)
    return float(value)


def _stop_strings(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,) if value else ()
    if isinstance(value, list) and all(isinstance(s, str) for s in value) and len(value) <= 4:
        return tuple(s for s in value if s)
    raise _bad("'stop' must be a string or a list of at most 4 strings")


def _sampling(body: dict[str, Any], default_temperature: float) -> SamplingParams:
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise _bad("'seed' must be an integer")
    try:
        return SamplingParams(
            temperature=_number(body, "temperature", default_temperature),
            top_p=_number(body, "top_p", 1.0),
            seed=seed,
        )
    except InferenceInputError:
        raise
    except Exception as exc:  # SamplingParams' InputError: same text, the protocol's 400
        raise _bad(str(exc)) from exc


def _token_ids(value: object, what: str) -> list[int]:
    if not isinstance(value, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in value):
        raise _bad(f"'{what}' must be a string or a list of token ids (integers)")
    return list(value)


def _prompt_ids(value: object, tokenizer: Tokenizer | None, what: str) -> list[int]:
    if isinstance(value, str):
        if tokenizer is None:
            raise _bad(
                f"this model carries no tokenizer, so '{what}' must be token ids; export it with a "
                "(model, tokenizer) factory to send text"
            )
        return tokenizer.encode(value)
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], (str, list)):
        return _prompt_ids(value[0], tokenizer, what)  # OpenAI's batch form with one prompt
    return _token_ids(value, what)


def _common(
    body: dict[str, Any], prompt: list[int], *, default_temperature: float, max_tokens_key: str
) -> ParsedRequest:
    if body.get("n", 1) != 1 or body.get("best_of", 1) not in (1, None):
        raise _bad("only n=1 is supported; send one request per completion")
    max_tokens = body.get(max_tokens_key)
    if max_tokens is None and max_tokens_key == "max_completion_tokens":
        max_tokens = body.get("max_tokens")
    max_tokens = DEFAULT_MAX_TOKENS if max_tokens is None else max_tokens
    max_tokens = _number({"max_tokens": max_tokens}, "max_tokens", DEFAULT_MAX_TOKENS, int)
    priority = _number(body, "priority", 0, int)
    timeout = body.get("timeout")
    timeout_s = None if timeout is None else _number(body, "timeout", 0.0) / 1e6  # microseconds
    stream_options = body.get("stream_options") or {}
    if not isinstance(stream_options, dict):
        raise _bad("'stream_options' must be an object")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise _bad("'stream' must be true or false")
    request = GenerationRequest(
        prompt=prompt,
        max_tokens=max_tokens,
        sampling=_sampling(body, default_temperature),
        stop_token_ids=frozenset() if body.get("ignore_eos") is True else None,
        priority=priority,
        timeout_s=timeout_s,
    )
    return ParsedRequest(
        request, _stop_strings(body.get("stop")), stream, bool(stream_options.get("include_usage"))
    )


def parse_completion(body: object, tokenizer: Tokenizer | None) -> ParsedRequest:
    body = _object(body)
    if "prompt" not in body:
        raise _bad("'prompt' is required")
    prompt = _prompt_ids(body["prompt"], tokenizer, "prompt")
    return _common(body, prompt, default_temperature=1.0, max_tokens_key="max_tokens")


def parse_chat(body: object, tokenizer: Tokenizer | None, template: str | None) -> ParsedRequest:
    body = _object(body)
    if tokenizer is None:
        raise _bad("this model carries no tokenizer; chat needs one (use /v1/completions with token ids)")
    messages = check_messages(body.get("messages"))
    prompt = tokenizer.encode(render_chat(messages, template))
    return _common(body, prompt, default_temperature=1.0, max_tokens_key="max_completion_tokens")


def parse_generate(body: object, tokenizer: Tokenizer | None, *, stream: bool) -> ParsedRequest:
    """The Triton generate extension: inputs at the top level, options under ``parameters``."""
    body = _object(body)
    parameters = body.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise _bad("'parameters' must be an object")
    if "text_input" in body:
        if not isinstance(body["text_input"], str):
            raise _bad("'text_input' must be a string")
        prompt = _prompt_ids(body["text_input"], tokenizer, "text_input")
    elif "input_ids" in body:
        prompt = _token_ids(body["input_ids"], "input_ids")
    else:
        raise _bad("give 'text_input' (a string) or 'input_ids' (token ids)")
    merged = {**parameters, "stream": stream}
    return _common(merged, prompt, default_temperature=0.0, max_tokens_key="max_tokens")


def _object(body: object) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise _bad("the request body must be a JSON object")
    return body


def check_messages(messages: object) -> list[dict[str, str]]:
    if not isinstance(messages, list) or not messages:
        raise _bad("'messages' must be a non-empty list of {role, content} objects")
    checked = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise _bad(f"messages[{i}] must be an object with 'role' and 'content'")
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise _bad(f"messages[{i}].role must be one of {', '.join(ROLES)}, got {role!r}")
        if isinstance(content, list):  # OpenAI's content parts: only text parts are understood
            if not all(isinstance(p, dict) and p.get("type") == "text" for p in content):
                raise _bad(f"messages[{i}].content parts must all be of type 'text'")
            content = "".join(str(p.get("text", "")) for p in content)
        if not isinstance(content, str):
            raise _bad(f"messages[{i}].content must be a string")
        checked.append({"role": str(role), "content": content})
    return checked


def render_chat(messages: list[dict[str, str]], template: str | None) -> str:
    if template:
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        return environment.from_string(template).render(messages=messages, add_generation_prompt=True)
    lines = [f"{m['role']}: {m['content']}" for m in messages]
    return "\n".join(lines) + "\nassistant:"


class StopText:
    """Text in, text out, cut at the first stop string; ``stopped`` once one was met."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self.stops = stops
        self.held = ""
        self.stopped = False
        self._keep = max((len(s) for s in stops), default=1) - 1

    def push(self, piece: str) -> str:
        if self.stopped:
            return ""
        text = self.held + piece
        cut = min((i for i in (text.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            self.held = ""
            return text[:cut]
        if self._keep == 0:
            self.held = ""
            return text
        out, self.held = text[: -self._keep] if len(text) > self._keep else "", text[-self._keep :]
        return out

    def flush(self) -> str:
        held, self.held = ("" if self.stopped else self.held), ""
        return held


__all__ = [
    "DEFAULT_MAX_TOKENS",
    "ParsedRequest",
    "StopText",
    "check_messages",
    "parse_chat",
    "parse_completion",
    "parse_generate",
    "render_chat",
]
