"""The request and response bodies of LLM containers behind SageMaker endpoints, both ways.

A SageMaker endpoint carries whatever JSON its container speaks, so a model's ``handling`` says which:

=============  =====================================================================================
handling       request -> answer
=============  =====================================================================================
``tgi``        HF Text Generation Inference: ``{"inputs": prompt, "parameters": {max_new_tokens,
               temperature, top_p, top_k, stop, seed, frequency_penalty, grammar, details}}`` ->
               ``[{"generated_text", "details"}]``; streamed (``"stream": true``) as
               ``data:{"token": {...}, "generated_text": null|..., "details": ...}`` lines
``huggingface`` the HF LLM inference toolkit's text-generation pipeline: ``{"inputs", "parameters":
               {max_new_tokens, temperature, top_p, top_k, do_sample, return_full_text}}`` ->
               ``[{"generated_text"}]``; no streaming
``llama``      Llama 2/3 on JumpStart: a prompt rendered with the Llama chat template, sent the TGI way
               (``prompt_format: llama3`` or ``llama2``), or Llama 2's original dialog form
               ``{"inputs": [[{"role", "content"}]], "parameters": {...}}`` -> ``[{"generation":
               {"role", "content"}}]`` (``prompt_format: dialog``, with ``accept_eula=true``)
``jurassic``   AI21 Jurassic-2: ``{"prompt", "maxTokens", "temperature", "topP", "stopSequences"}``
               -> ``completions[0].data.text``
``cohere``     Cohere Command (generate): ``{"prompt", "max_tokens", "temperature", "p", "k",
               "stop_sequences", ...}`` -> ``generations[0].text``; streamed as JSON lines
``claude``     Anthropic Claude v1/v2 (text completions): ``"\\n\\nHuman: ...\\n\\nAssistant:"`` prompt,
               ``max_tokens_to_sample`` -> ``completion``
``custom``     ``request_template`` (JSON with ``{{placeholders}}``) -> ``response_path`` (``$.a[0].b``);
               streamed lines read with ``stream_path``
=============  =====================================================================================

These are text-completion containers: no tools and no images (:class:`CapabilityError`). Pure
functions and small classes, no I/O.
"""

from __future__ import annotations

import json
import re
from typing import Any, Iterable, Literal, Optional, Union

from ...errors import CapabilityError, ProviderError, SettingsError, StreamInterruptedError
from ...schema import (
    CompletionRequest,
    CompletionResponse,
    Message,
    StreamChunk,
    StreamEvent,
    StreamFooter,
    Usage,
)

__all__ = [
    "PROVIDER", "Handling", "PromptFormat", "JsonPath", "RequestTemplate", "render_prompt", "check_request",
    "request_body", "parse_response", "StreamDecoder", "streams_by_default",
]

PROVIDER = "sagemaker"
Handling = Literal["tgi", "huggingface", "llama", "jurassic", "cohere", "claude", "custom"]
PromptFormat = Literal["plain", "llama2", "llama3", "chatml", "dialog"]
#: Claude's text-completions API requires max_tokens_to_sample; this is what is sent when unset
CLAUDE_DEFAULT_MAX_TOKENS = 1024

# seed setting -> the container's key, per handling ("parameters" holds them for the HF-style ones)
_TGI_KEYS = {"maxOutputTokens": "max_new_tokens", "temperature": "temperature", "topP": "top_p", "topK": "top_k",
             "stopSequences": "stop", "seed": "seed", "frequencyPenalty": "frequency_penalty"}
_SETTING_KEYS: dict[str, dict[str, str]] = {
    "tgi": _TGI_KEYS,
    "llama": _TGI_KEYS,
    "huggingface": {"maxOutputTokens": "max_new_tokens", "temperature": "temperature", "topP": "top_p",
                    "topK": "top_k"},
    "dialog": {"maxOutputTokens": "max_new_tokens", "temperature": "temperature", "topP": "top_p"},
    "jurassic": {"maxOutputTokens": "maxTokens", "temperature": "temperature", "topP": "topP",
                 "stopSequences": "stopSequences"},
    "cohere": {"maxOutputTokens": "max_tokens", "temperature": "temperature", "topP": "p", "topK": "k",
               "stopSequences": "stop_sequences", "seed": "seed", "frequencyPenalty": "frequency_penalty",
               "presencePenalty": "presence_penalty"},
    "claude": {"maxOutputTokens": "max_tokens_to_sample", "temperature": "temperature", "topP": "top_p",
               "topK": "top_k", "stopSequences": "stop_sequences"},
    # custom: the template's placeholders
    "custom": {"maxOutputTokens": "max_tokens", "temperature": "temperature", "topP": "top_p", "topK": "top_k",
               "stopSequences": "stop_sequences", "seed": "seed"},
}
_FINISH = {"length": "length", "eos_token": "stop", "stop_sequence": "stop", "COMPLETE": "stop",
           "MAX_TOKENS": "length", "endoftext": "stop", "stop": "stop", "max_tokens": "length",
           "ERROR_TOXIC": "content_filter"}


def _key(handling: str, prompt_format: str) -> str:
    return "dialog" if handling == "llama" and prompt_format == "dialog" else handling


def streams_by_default(handling: str, prompt_format: str, stream_path: Optional[str]) -> bool:
    """Whether the handling's container streams (TGI-style and Cohere do; the others answer whole)."""
    if handling == "custom":
        return stream_path is not None
    return handling in ("tgi", "cohere") or (handling == "llama" and prompt_format != "dialog")


# --------------------------------------------------------------------------------------------------
# JSONPath-style extraction


class JsonPath:
    """A small JSONPath subset: ``$`` then ``.name``, ``["name"]``/``['name']`` and ``[index]`` (may be negative).

    Enough for the answers of LLM containers (``$.choices[0].message.content``,
    ``$[0].generated_text``) and nothing more: no wildcards, slices or filters.
    """

    _STEP = re.compile(r"""\.([A-Za-z_][\w-]*)|\[\s*(-?\d+)\s*\]|\[\s*(?:"((?:[^"\\]|\\.)*)"|'([^']*)')\s*\]""")

    def __init__(self, path: str):
        self.path = path
        text = path.strip()
        if not text.startswith("$"):
            raise ValueError(f"path {path!r} must start with '$'")
        steps: list[Union[str, int]] = []
        pos = 1
        while pos < len(text):
            m = self._STEP.match(text, pos)
            if m is None:
                raise ValueError(f"path {path!r}: cannot read {text[pos:]!r} (use .name, [n] or [\"name\"])")
            name, index, dq, sq = m.groups()
            steps.append(int(index) if index is not None else
                         name if name is not None else json.loads(f'"{dq}"') if dq is not None else sq)
            pos = m.end()
        self.steps = steps

    _MISSING = object()

    def find(self, doc: Any) -> Any:
        """The value at the path, or :attr:`MISSING`."""
        cur = doc
        for step in self.steps:
            if isinstance(step, int) and isinstance(cur, list) and -len(cur) <= step < len(cur):
                cur = cur[step]
            elif isinstance(step, str) and isinstance(cur, dict) and step in cur:
                cur = cur[step]
            else:
                return self._MISSING
        return cur

    def extract(self, doc: Any) -> str:
        value = self.find(doc)
        if value is self._MISSING or value is None:
            raise ProviderError(f"the endpoint's answer has nothing at {self.path} (response_path); it answered "
                                f"{json.dumps(doc)[:200]}", provider=PROVIDER)
        return value if isinstance(value, str) else json.dumps(value)

    @classmethod
    def missing(cls, value: Any) -> bool:
        return value is cls._MISSING


# --------------------------------------------------------------------------------------------------
# custom request templates

#: placeholder -> what it stands for (values are JSON values: a quoted placeholder alone becomes the
#: value itself, so numbers stay numbers; inside longer text it is interpolated as text)
PLACEHOLDERS = {
    "prompt": "the conversation rendered as one prompt (prompt_format)",
    "messages_json": "the conversation as [{role, content}] objects",
    "system": "the system message's text",
    "max_tokens": "maxOutputTokens", "temperature": "temperature", "top_p": "topP", "top_k": "topK",
    "stop_sequences": "stopSequences (a list)", "seed": "seed", "stream": "true when streaming",
}
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_]+)\s*\}\}")


def _quote_bare_placeholders(text: str) -> str:
    """``{"n": {{max_tokens}}}`` -> ``{"n": "{{max_tokens}}"}``: a placeholder outside strings becomes a string
    holding only it, which :meth:`RequestTemplate.render` turns back into the bare value."""
    out, i, in_string = [], 0, False
    while i < len(text):
        c = text[i]
        if in_string:
            if c == "\\":
                out.append(text[i:i + 2])
                i += 2
                continue
            in_string = c != '"'
        elif c == '"':
            in_string = True
        else:
            m = _PLACEHOLDER.match(text, i)
            if m:
                out.append(f'"{m.group(0)}"')
                i = m.end()
                continue
        out.append(c)
        i += 1
    return "".join(out)


class RequestTemplate:
    """A JSON request body with ``{{placeholders}}``, filled with properly encoded values.

    The template is parsed once; rendering walks the JSON, so values are encoded by ``json.dumps``
    and can never break the body. A key whose whole value is an unset placeholder is left out (the
    container's default applies).
    """

    def __init__(self, text: str):
        try:
            self.doc = json.loads(_quote_bare_placeholders(text))
        except json.JSONDecodeError as e:
            raise ValueError(f"request_template is not JSON (placeholders aside): {e}") from None
        self.names = set(_PLACEHOLDER.findall(json.dumps(self.doc)))
        unknown = sorted(self.names - set(PLACEHOLDERS))
        if unknown:
            raise ValueError(f"request_template uses unknown placeholder(s) {unknown}; "
                             f"known: {', '.join(PLACEHOLDERS)}")

    def render(self, values: dict[str, Any]) -> Any:
        return self._fill(self.doc, values)

    _UNSET = object()

    def _fill(self, node: Any, values: dict[str, Any]) -> Any:
        if isinstance(node, dict):
            out = {}
            for k, v in node.items():
                filled = self._fill(v, values)
                if filled is not self._UNSET:
                    out[k] = filled
            return out
        if isinstance(node, list):
            return [None if x is self._UNSET else x for x in (self._fill(v, values) for v in node)]
        if isinstance(node, str):
            whole = _PLACEHOLDER.fullmatch(node.strip())
            if whole:
                value = values.get(whole.group(1))
                return self._UNSET if value is None else value
            return _PLACEHOLDER.sub(lambda m: _as_text(values.get(m.group(1))), node)
        return node


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value)


# --------------------------------------------------------------------------------------------------
# prompts


def _turns(messages: Iterable[Message]) -> list[tuple[str, str]]:
    """(role, text) pairs; text-only, tool-free conversations are all these containers read."""
    out = []
    for m in messages:
        if m.role == "tool" or m.tool_calls:
            raise CapabilityError(f"{PROVIDER} text-completion endpoints do not take tool calls or tool results")
        if any(p.type != "text" for p in m.parts):
            raise CapabilityError(f"{PROVIDER} text-completion endpoints do not take images")
        out.append((m.role, m.text))
    return out


def render_prompt(turns: list[tuple[str, str]], fmt: str) -> str:
    """The conversation as one prompt for a text-completion model."""
    if fmt == "llama3":
        body = "".join(f"<|start_header_id|>{role}<|end_header_id|>\n\n{text.strip()}<|eot_id|>"
                       for role, text in turns)
        return f"<|begin_of_text|>{body}<|start_header_id|>assistant<|end_header_id|>\n\n"
    if fmt == "llama2":
        return _llama2(turns)
    if fmt == "chatml":
        body = "".join(f"<|im_start|>{role}\n{text}<|im_end|>\n" for role, text in turns)
        return body + "<|im_start|>assistant\n"
    if fmt == "claude":
        system = "".join(t for r, t in turns if r == "system")
        body = "".join(f"\n\n{'Human' if r == 'user' else 'Assistant'}: {t}" for r, t in turns if r != "system")
        return f"{system}{body}\n\nAssistant:"
    # plain: a lone user message is the prompt itself; a conversation is a labelled transcript
    if len(turns) == 1 and turns[0][0] == "user":
        return turns[0][1]
    labels = {"system": "System", "user": "User", "assistant": "Assistant"}
    return "\n\n".join(f"{labels[r]}: {t}" for r, t in turns) + "\n\nAssistant:"


def _llama2(turns: list[tuple[str, str]]) -> str:
    system = "\n".join(t for r, t in turns if r == "system")
    out, pending_user = [], None
    for role, text in (t for t in turns if t[0] != "system"):
        if role == "user":
            if system and not out and pending_user is None:
                text = f"<<SYS>>\n{system}\n<</SYS>>\n\n{text}"
            pending_user = text if pending_user is None else f"{pending_user}\n{text}"
        else:
            out.append(f"<s>[INST] {(pending_user or '').strip()} [/INST] {text.strip()} </s>")
            pending_user = None
    if pending_user is not None:
        out.append(f"<s>[INST] {pending_user.strip()} [/INST]")
    return "".join(out)


# --------------------------------------------------------------------------------------------------
# requests


def check_request(handling: str, prompt_format: str, request: CompletionRequest,
                  template: Optional[RequestTemplate]) -> None:
    """Refuse, before any call, what a text-completion container cannot do or has no parameter for."""
    s = request.settings
    if s.tools or (s.toolChoice is not None and s.toolChoice.type != "none"):
        raise CapabilityError(f"{PROVIDER} endpoints ({handling} handling) are text-completion containers "
                              "without tool calling; use a chat connection for tools")
    keys = _SETTING_KEYS[_key(handling, prompt_format)]
    supported = set(keys)
    if handling == "custom" and template is not None:
        supported = {k for k, v in keys.items() if v in template.names}
    if handling in ("tgi", "llama") and prompt_format != "dialog":
        supported.add("responseFormat")  # TGI grammars
    bad = [k for k, v in s.to_dict().items()
           if k not in supported and k != "extra" and v not in (False, [], {})
           and not (k == "toolChoice" and s.toolChoice is not None and s.toolChoice.type == "none")]
    if bad:
        what = ("its request_template has no placeholder for" if handling == "custom"
                else f"the {handling} container has no parameter for")
        raise SettingsError(f"{PROVIDER}: {what} {', '.join(bad)}; remove {'them' if len(bad) > 1 else 'it'}"
                            + (" or add the placeholder" if handling == "custom" else ""), bad)


def _settings_values(handling: str, prompt_format: str, request: CompletionRequest) -> dict[str, Any]:
    s = request.settings
    out = {}
    for setting, key in _SETTING_KEYS[_key(handling, prompt_format)].items():
        value = getattr(s, setting)
        if value is not None:
            out[key] = value
    return out


def _tgi_parameters(handling: str, prompt_format: str, request: CompletionRequest) -> dict[str, Any]:
    params = _settings_values(handling, prompt_format, request)
    if params.get("temperature") == 0:
        # TGI and the HF pipeline reject temperature 0 ("must be strictly positive"): greedy decoding is do_sample off
        del params["temperature"]
        params["do_sample"] = False
    if params.get("top_p") == 1.0:
        del params["top_p"]  # TGI requires top_p < 1; 1.0 means no nucleus filtering, the default
    if handling == "huggingface":
        params["return_full_text"] = False  # the pipeline echoes the prompt otherwise
        params.setdefault("do_sample", "temperature" in params or "top_p" in params or "top_k" in params)
    elif prompt_format != "dialog":
        params["details"] = True  # finish reason and token counts
        fmt = request.settings.responseFormat
        if fmt is not None and fmt.type == "json":
            params["grammar"] = {"type": "json", "value": fmt.schema_ or {"type": "object"}}
    params.update(request.settings.extra or {})
    return params


def request_body(handling: str, prompt_format: str, request: CompletionRequest, *, stream: bool,
                 template: Optional[RequestTemplate] = None) -> Any:
    """The JSON body for the container (a dict, or whatever the custom template renders)."""
    turns = _turns(request.messages)
    if handling in ("tgi", "huggingface", "llama"):
        if prompt_format == "dialog":
            inputs: Any = [[{"role": r, "content": t} for r, t in turns]]
        else:
            inputs = render_prompt(turns, prompt_format)
        body: dict[str, Any] = {"inputs": inputs,
                                "parameters": _tgi_parameters(handling, prompt_format, request)}
        if stream:
            body["stream"] = True
        return body
    if handling == "custom":
        assert template is not None
        values = dict(_settings_values(handling, prompt_format, request),
                      prompt=render_prompt(turns, prompt_format),
                      messages_json=[{"role": r, "content": t} for r, t in turns],
                      system="\n".join(t for r, t in turns if r == "system") or None, stream=stream)
        rendered = template.render(values)
        if request.settings.extra:
            if not isinstance(rendered, dict):
                raise SettingsError("extra keys need a request_template whose body is a JSON object", ["extra"])
            rendered.update(request.settings.extra)
        return rendered
    values = _settings_values(handling, prompt_format, request)
    if handling == "claude":
        body = {"prompt": render_prompt(turns, "claude"), "max_tokens_to_sample": CLAUDE_DEFAULT_MAX_TOKENS, **values}
    else:  # jurassic, cohere: the prompt is the conversation as a plain transcript
        body = {"prompt": render_prompt(turns, "plain"), **values}
        if stream:
            body["stream"] = True
    body.update(request.settings.extra or {})
    return body


# --------------------------------------------------------------------------------------------------
# answers


def _finish(reason: Any) -> Optional[str]:
    return _FINISH.get(reason) if isinstance(reason, str) else None


def _first(body: Any) -> Any:
    return body[0] if isinstance(body, list) and body else body


def parse_response(handling: str, prompt_format: str, raw: bytes, model: str,
                   response_path: Optional[JsonPath] = None) -> CompletionResponse:
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ProviderError(f"the {PROVIDER} endpoint answered with a body that is not JSON: {raw[:200]!r}",
                            provider=PROVIDER) from None
    text, finish, usage = "", None, Usage()
    try:
        if handling == "custom":
            assert response_path is not None
            text = response_path.extract(body)
        elif handling == "llama" and prompt_format == "dialog":
            gen = _first(body)["generation"]
            text = gen["content"] if isinstance(gen, dict) else gen
        elif handling in ("tgi", "huggingface", "llama"):
            first = _first(body)
            text = first["generated_text"]
            details = first.get("details") or {}
            finish = _finish(details.get("finish_reason"))
            usage = Usage(output_tokens=details.get("generated_tokens") or 0)
        elif handling == "jurassic":
            completion = body["completions"][0]
            text = completion["data"]["text"]
            finish = _finish((completion.get("finishReason") or {}).get("reason"))
            usage = Usage(input_tokens=len((body.get("prompt") or {}).get("tokens") or []),
                          output_tokens=len(completion["data"].get("tokens") or []))
        elif handling == "cohere":
            gen = body["generations"][0]
            text, finish = gen["text"], _finish(gen.get("finish_reason"))
            usage = _cohere_usage(body)
        else:  # claude
            text, finish = body["completion"], _finish(body.get("stop_reason"))
    except (KeyError, IndexError, TypeError):
        raise ProviderError(f"the {PROVIDER} endpoint's answer is not what {handling} handling reads: "
                            f"{raw[:200]!r}", provider=PROVIDER) from None
    return CompletionResponse(text=text, finish_reason=finish or "stop", usage=usage,  # type: ignore[arg-type]
                              model=model, raw=body)


def _cohere_usage(body: dict[str, Any]) -> Usage:
    billed = (body.get("meta") or {}).get("billed_units") or {}
    return Usage(input_tokens=int(billed.get("input_tokens") or 0), output_tokens=int(billed.get("output_tokens") or 0))


class StreamDecoder:
    """Bytes of ``PayloadPart`` events -> mesh stream events.

    Parts split the container's lines anywhere (a line may span parts), so bytes are buffered until
    a newline. TGI-style streams end with an event carrying ``generated_text`` and Cohere's with
    ``is_finished: true``: a body that ends before it is an interrupted stream. A custom stream has
    no end marker, so the body's clean end is its end.
    """

    def __init__(self, handling: str, model: str, stream_path: Optional[JsonPath] = None):
        self.handling = handling
        self.model = model
        self.stream_path = stream_path
        self.text: list[str] = []
        self.events = 0
        self._buf = b""
        self._finish: Optional[str] = None
        self._usage = Usage()
        self._done = handling == "custom"

    def feed(self, data: bytes) -> list[StreamEvent]:
        self._buf += data
        *lines, self._buf = self._buf.split(b"\n")
        out: list[StreamEvent] = []
        for line in lines:
            chunk = self._line(line)
            if chunk is not None:
                out.append(chunk)
        return out

    def _line(self, raw: bytes) -> Optional[StreamChunk]:
        line = raw.strip()
        if line.startswith(b"data:"):
            line = line[5:].strip()
        if not line or line == b"[DONE]":
            return None
        try:
            ev = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ProviderError(f"the {PROVIDER} stream sent a line that is not JSON: {line[:80]!r}",
                                provider=PROVIDER) from None
        self.events += 1
        piece = self._piece(ev)
        if not piece:
            return None
        self.text.append(piece)
        return StreamChunk(text=piece)

    def _piece(self, ev: Any) -> Optional[str]:
        if self.handling == "custom":
            assert self.stream_path is not None
            value = self.stream_path.find(ev)
            return None if JsonPath.missing(value) or value is None else _as_text(value)
        if self.handling == "cohere":
            if ev.get("is_finished"):
                self._done = True
                self._finish = _finish(ev.get("finish_reason"))
                self._usage = _cohere_usage(ev.get("response") or {})
                return None
            return ev.get("text")
        token = ev.get("token") or {}
        if ev.get("generated_text") is not None:  # TGI's last event: the last token and the details
            self._done = True
            details = ev.get("details") or {}
            self._finish = _finish(details.get("finish_reason"))
            self._usage = Usage(output_tokens=details.get("generated_tokens") or 0)
        return None if token.get("special") else token.get("text")

    def end(self) -> list[StreamEvent]:
        """What is left once the body ended cleanly: a last line without its newline, then the footer."""
        out: list[StreamEvent] = []
        if self._buf.strip():
            chunk = self._line(self._buf)
            self._buf = b""
            if chunk is not None:
                out.append(chunk)
        if not self._done:
            raise self.interrupted("the stream ended before the container's final event")
        out.append(StreamFooter(finish_reason=self._finish or "stop", usage=self._usage,  # type: ignore[arg-type]
                                model=self.model))
        return out

    def interrupted(self, why: str) -> StreamInterruptedError:
        return StreamInterruptedError(f"the {PROVIDER} stream broke off after {self.events} events ({why})",
                                      partial_text="".join(self.text), provider=PROVIDER)
