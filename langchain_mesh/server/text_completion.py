"""``POST /v1/completions``: OpenAI's legacy text-completion API over the mesh's chat models.

Each prompt becomes one user message (:meth:`CompletionRequest.from_prompt`, the path
:class:`~langchain_mesh.langchain.MeshLLM` takes too); a list of prompts is answered as one choice per
prompt, in order. Settings are the chat endpoint's, under the same OpenAI names (``max_tokens``,
``stop``, ``temperature``...), checked by the same :func:`validate_settings`. ``logprobs: n`` is
answered in the legacy layout (tokens, token_logprobs, top_logprobs, text_offset). What the mesh
cannot do is refused with a 400 that names it: ``echo: true`` (the prompt is not scored by a chat
model), ``suffix`` (no insertion mode), ``best_of`` > 1, token-id prompts.

    from openai import OpenAI
    client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="...")
    client.completions.create(model="openai:myopenai:gpt-4o", prompt="what is databricks", max_tokens=50)
"""

from __future__ import annotations

import time
from typing import Any, Callable, Optional, Sequence

from ..errors import SettingsError
from ..schema import CompletionRequest, CompletionResponse, StreamChunk, TokenLogProb, Usage, validate_settings
from .errors import APIError, api_error
from .models import CompletionsRequest
from .translate import _FINISH, _SETTING_OF, _new_id

__all__ = ["text_requests", "text_completion_json", "TextChunkStream"]

_REFUSED = {
    "echo": "echo is not supported: mesh LLMs are chat models and do not score the prompt; leave echo out",
    "suffix": "suffix is not supported: mesh LLMs have no insertion mode; put the text in the prompt",
}


def _refuse_unsupported(req: CompletionsRequest) -> None:
    if req.echo:
        raise APIError(400, _REFUSED["echo"], param="echo", code="unsupported_parameter")
    if req.suffix is not None:
        raise APIError(400, _REFUSED["suffix"], param="suffix", code="unsupported_parameter")
    if req.best_of is not None and req.best_of != 1:
        raise APIError(400, f"best_of={req.best_of} is not supported: one completion is made per prompt",
                       param="best_of", code="unsupported_parameter")
    if req.stream_options is not None and not req.stream:
        raise APIError(400, "stream_options is only allowed when stream is true", param="stream_options")


def text_requests(req: CompletionsRequest) -> tuple[list[CompletionRequest], Callable[[Sequence[str]], Optional[str]]]:
    """One mesh request per prompt, and a function naming the request field behind a SettingsError."""
    _refuse_unsupported(req)
    prompts = [req.prompt] if isinstance(req.prompt, str) else list(req.prompt)
    if not prompts:
        raise APIError(400, "prompt must not be empty", param="prompt")
    settings: dict[str, Any] = {}
    given: dict[str, str] = {}
    for param, setting in _SETTING_OF.items():
        value = getattr(req, param, None) if param not in ("logprobs", "top_logprobs") else None
        if value is not None:
            settings[setting], given[setting] = value, param
    if req.logprobs is not None:  # legacy: an int, the number of alternatives per token (0: none)
        settings["logProbs"], given["logProbs"] = True, "logprobs"
        if req.logprobs:
            settings["topLogProbs"], given["topLogProbs"] = req.logprobs, "logprobs"
    if req.user is not None:
        settings["extra"] = {"user": req.user}

    def param_of(names: Sequence[str]) -> Optional[str]:
        return next((given[n] for n in names if n in given), None)

    try:
        checked = validate_settings(settings)
    except SettingsError as e:
        raise api_error(e, param_of) from None
    return [CompletionRequest.from_prompt(p, checked.model_copy()) for p in prompts], param_of


def _legacy_logprobs(lps: Optional[list[TokenLogProb]]) -> Optional[dict[str, Any]]:
    if lps is None:
        return None
    offsets, at = [], 0
    for t in lps:
        offsets.append(at)
        at += len(t.token)
    return {"tokens": [t.token for t in lps], "token_logprobs": [t.logprob for t in lps],
            "top_logprobs": [dict(t.top) for t in lps], "text_offset": offsets}


def _usage(u: Usage) -> dict[str, Any]:
    return {"prompt_tokens": u.input_tokens, "completion_tokens": u.output_tokens, "total_tokens": u.total_tokens}


def text_completion_json(responses: list[CompletionResponse], llm_id: str) -> dict[str, Any]:
    total = sum((r.usage for r in responses), Usage())
    return {"id": _new_id("cmpl-"), "object": "text_completion", "created": int(time.time()), "model": llm_id,
            "choices": [{"text": r.text, "index": i, "logprobs": _legacy_logprobs(r.log_probs),
                         "finish_reason": _FINISH.get(r.finish_reason, r.finish_reason)}
                        for i, r in enumerate(responses)],
            "usage": _usage(total), "system_fingerprint": None}


class TextChunkStream:
    """Mesh stream events -> ``text_completion`` chunks (choice ``index`` = the prompt's), a finish chunk
    per prompt, then (``include_usage``) one usage-only chunk."""

    def __init__(self, llm_id: str, include_usage: bool):
        self._base = {"id": _new_id("cmpl-"), "object": "text_completion", "created": int(time.time()),
                      "model": llm_id, "system_fingerprint": None}
        self._include_usage = include_usage
        self.usage = Usage()

    def _chunk(self, index: int, text: str, finish: Optional[str], logprobs: Any = None) -> dict[str, Any]:
        d = {**self._base, "choices": [{"text": text, "index": index, "logprobs": logprobs, "finish_reason": finish}]}
        if self._include_usage:
            d["usage"] = None
        return d

    def chunk(self, index: int, ev: StreamChunk) -> Optional[dict[str, Any]]:
        if not ev.text and not ev.log_probs:
            return None
        return self._chunk(index, ev.text or "", None, _legacy_logprobs(ev.log_probs))

    def end(self, index: int, finish_reason: Optional[str], usage: Usage) -> dict[str, Any]:
        self.usage = self.usage + usage
        return self._chunk(index, "", _FINISH.get(finish_reason, finish_reason))

    def final(self) -> list[dict[str, Any]]:
        return [{**self._base, "choices": [], "usage": _usage(self.usage)}] if self._include_usage else []
