"""``MeshChatModel``: any mesh LLM as a LangChain chat model.

Every call builds one :class:`~langchain_mesh.schema.CompletionRequest` (messages converted by
:mod:`.convert`, settings validated by :func:`~langchain_mesh.schema.validate_settings` under the
seed's names) and hands it to the mesh, the same path ``llm.new_completion().execute()`` takes:
``mesh.complete`` / ``mesh.stream`` for sync calls and ``mesh.acomplete`` / ``mesh.astream`` for
async ones, so async calls use the connection's own async client, never a thread pool.
"""

from __future__ import annotations

from operator import itemgetter
from typing import Any, AsyncIterator, Callable, ClassVar, Iterator, Literal, Optional, Sequence, Union

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.output_parsers import JsonOutputParser, PydanticOutputParser
from langchain_core.output_parsers.openai_tools import JsonOutputKeyToolsParser, PydanticToolsParser
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableMap, RunnablePassthrough
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_json_schema, convert_to_openai_tool
from langchain_core.utils.pydantic import is_basemodel_subclass

from ..errors import MeshError, SettingsError
from ..schema import CompletionRequest, StreamFooter, validate_settings
from ._common import (
    MeshModelFields,
    provider_of,
    coerce_mesh,
    get_llm,
)
from .convert import StreamConverter, response_to_ai_message, to_mesh_messages
from .serialization import allow_in_langchain_load

__all__ = ["MeshChatModel", "normalize_tool_choice", "normalize_response_format"]

_ToolChoice = Union[dict, str, Literal["auto", "any", "required", "none"], bool, None]


def normalize_tool_choice(tool_choice: Any, tool_names: Sequence[str]) -> Optional[dict[str, Any]]:
    """Every LangChain spelling of ``tool_choice`` -> the seed's ``toolChoice``.

    ``"auto"``; ``"any"``/``"required"``/``True`` (a call is required; ``True`` with a single tool
    names it); ``"none"``; a tool's name; OpenAI's ``{"type": "function", "function": {"name": ...}}``;
    Anthropic's ``{"type": "tool", "name": ...}`` / ``{"type": "any"}``; or the seed's own dict.
    ``None`` and ``False`` leave the choice to the model.
    """
    if tool_choice is None or tool_choice is False:
        return None
    if tool_choice is True:
        return ({"type": "tool_name", "name": tool_names[0]} if len(tool_names) == 1
                else {"type": "required"})
    if isinstance(tool_choice, str):
        if tool_choice == "auto":
            return {"type": "auto"}
        if tool_choice in ("any", "required"):
            return {"type": "required"}
        if tool_choice == "none":
            return {"type": "none"}
        if tool_choice not in tool_names:
            raise SettingsError(
                f"tool_choice names {tool_choice!r}, which is not among the bound tools {list(tool_names)}; "
                "use 'auto', 'any', 'required', 'none' or one of the tool names", ["toolChoice"])
        return {"type": "tool_name", "name": tool_choice}
    if isinstance(tool_choice, dict):
        t = tool_choice.get("type")
        if t == "function" and isinstance(tool_choice.get("function"), dict):
            return normalize_tool_choice(tool_choice["function"].get("name"), tool_names)
        if t == "tool" and tool_choice.get("name"):  # Anthropic
            return normalize_tool_choice(tool_choice["name"], tool_names)
        if t == "tool_name":
            return normalize_tool_choice(tool_choice.get("name"), tool_names)
        if t in ("auto", "any", "required", "none"):
            return normalize_tool_choice(t, tool_names)
    raise SettingsError(f"unrecognised tool_choice {tool_choice!r}", ["toolChoice"])


def normalize_response_format(fmt: Any) -> Any:
    """OpenAI's ``response_format`` spellings (and a pydantic model) -> the seed's ``responseFormat``.

    ``{"type": "json_object"}`` -> any JSON object; ``{"type": "json_schema", "json_schema": {"name",
    "schema", "strict"}}`` -> JSON following the schema; the seed's own ``{"type": "json", ...}`` and
    ``{"type": "text"}`` pass through.
    """
    if isinstance(fmt, type) and is_basemodel_subclass(fmt):
        return {"type": "json", "schema": convert_to_json_schema(fmt), "name": fmt.__name__, "strict": True}
    if isinstance(fmt, dict):
        t = fmt.get("type")
        if t == "json_object":
            return {"type": "json"}
        if t == "json_schema" and isinstance(fmt.get("json_schema"), dict):
            js = fmt["json_schema"]
            out: dict[str, Any] = {"type": "json", "schema": js.get("schema"), "strict": bool(js.get("strict"))}
            if js.get("name"):
                out["name"] = js["name"]
            return out
    return fmt


def _schema_name(schema: Any) -> Optional[str]:
    if isinstance(schema, dict):
        return schema.get("title") or schema.get("name")
    return getattr(schema, "__name__", None)


class MeshChatModel(MeshModelFields, BaseChatModel):
    """A mesh LLM (``<connection type>:<connection name>:<model>``) as a LangChain chat model.

    ```python
    from langchain_mesh import Mesh, MeshChatModel

    chat = MeshChatModel(model="openai:myopenai:gpt-4o", mesh=Mesh.from_config("mesh.yaml"),
                         temperature=0.2, max_tokens=256)
    chat.bind_tools([multiply], tool_choice="any").invoke("What is 3 * 6?")
    chat.with_structured_output(Answer).invoke("...")
    ```

    ``mesh`` may be a :class:`~langchain_mesh.Mesh`, a config dict or a path to a mesh YAML file;
    left out, the process-wide default mesh (``MESH_CONFIG`` or the embedded local models) is used.
    Settings without a named field (``presencePenalty``, ``logProbs``, ``seed``, connection
    ``extra``...) go in ``settings`` under the seed's names; per-call kwargs accept either naming.
    """

    # ---- LangChain metadata ------------------------------------------------------------------------------

    _ls_model_type: ClassVar[str] = "chat"

    @property
    def _llm_type(self) -> str:
        return "mesh-chat"

    @property
    def llm_id(self) -> str:
        return self.model

    @classmethod
    def from_id(cls, llm_id: str, *, mesh: Any = None, **kwargs: Any) -> "MeshChatModel":
        """The chat model of a mesh LLM id, checked now: ``MeshChatModel.from_id("openai:o:gpt-4o",
        mesh="mesh.yaml")`` (the same as :func:`langchain_mesh.init_chat_model`)."""
        mesh = coerce_mesh(mesh)
        get_llm(mesh, llm_id, "GENERIC_COMPLETION")  # unknown ids and embedding models fail now, clearly
        unknown = sorted(k for k in kwargs if k not in cls.model_fields and k != "llm_id")
        if unknown:
            raise SettingsError(f"{cls.__name__} has no argument(s) {unknown}; see help({cls.__name__})", unknown)
        return cls(model=llm_id, mesh=mesh, **kwargs)


    # ---- request building --------------------------------------------------------------------------------

    def _request(self, messages: list[BaseMessage], stop: Optional[list[str]], kwargs: dict[str, Any]):  # type: ignore[no-untyped-def]
        kwargs = dict(kwargs)
        model = kwargs.pop("model", None) or self.model
        llm = get_llm(self.mesh, model, "GENERIC_COMPLETION")
        if "tool_choice" in kwargs:  # passed straight to invoke/bind rather than through bind_tools
            tools = kwargs.get("tools") or self._base.get("tools") or []
            names = [t["function"]["name"] if isinstance(t, dict) else t.function.name for t in tools]
            kwargs["tool_choice"] = normalize_tool_choice(kwargs["tool_choice"], names)
        if kwargs.get("response_format") is not None:
            kwargs["response_format"] = normalize_response_format(kwargs["response_format"])
        settings = self._call_settings(stop, kwargs)
        request = CompletionRequest.model_construct(messages=to_mesh_messages(messages), settings=settings)
        return llm, request

    # ---- the four native paths ---------------------------------------------------------------------------

    def _generate(self, messages: list[BaseMessage], stop: Optional[list[str]] = None,
                  run_manager: Optional[CallbackManagerForLLMRun] = None, **kwargs: Any) -> ChatResult:
        llm, request = self._request(messages, stop, kwargs)
        resp = llm.mesh.complete(llm, request, timeout=self.timeout, max_retries=self.max_retries)
        return self._result(resp, llm)

    async def _agenerate(self, messages: list[BaseMessage], stop: Optional[list[str]] = None,
                         run_manager: Optional[AsyncCallbackManagerForLLMRun] = None, **kwargs: Any) -> ChatResult:
        llm, request = self._request(messages, stop, kwargs)
        resp = await llm.mesh.acomplete(llm, request, timeout=self.timeout, max_retries=self.max_retries)
        return self._result(resp, llm)

    def _stream(self, messages: list[BaseMessage], stop: Optional[list[str]] = None,
                run_manager: Optional[CallbackManagerForLLMRun] = None, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        llm, request = self._request(messages, stop, kwargs)
        conv = StreamConverter(llm.id, llm.connection.type_name or provider_of(llm.id))
        events = llm.mesh.stream(llm, request, timeout=self.timeout, max_retries=self.max_retries)
        for ev in events:
            gen = self._gen_chunk(conv, ev)
            if gen is None:
                continue
            if run_manager is not None:
                run_manager.on_llm_new_token(gen.text, chunk=gen)
            yield gen

    async def _astream(self, messages: list[BaseMessage], stop: Optional[list[str]] = None,
                       run_manager: Optional[AsyncCallbackManagerForLLMRun] = None,
                       **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        llm, request = self._request(messages, stop, kwargs)
        conv = StreamConverter(llm.id, llm.connection.type_name or provider_of(llm.id))
        events = llm.mesh.astream(llm, request, timeout=self.timeout, max_retries=self.max_retries)
        async for ev in events:
            gen = self._gen_chunk(conv, ev)
            if gen is None:
                continue
            if run_manager is not None:
                await run_manager.on_llm_new_token(gen.text, chunk=gen)
            yield gen

    @staticmethod
    def _gen_chunk(conv: StreamConverter, ev: Any) -> Optional[ChatGenerationChunk]:
        if isinstance(ev, StreamFooter):
            return ChatGenerationChunk(message=conv.footer(ev), generation_info={"finish_reason": ev.finish_reason})
        msg = conv.chunk(ev)
        return None if msg is None else ChatGenerationChunk(message=msg)

    @staticmethod
    def _result(resp: Any, llm: Any) -> ChatResult:
        if not resp.success:
            raise MeshError(resp.error or f"{llm.id} returned an unsuccessful response")
        msg = response_to_ai_message(resp, llm_id=llm.id, provider=llm.connection.type_name or provider_of(llm.id))
        return ChatResult(
            generations=[ChatGeneration(message=msg, generation_info={"finish_reason": resp.finish_reason})],
            llm_output={"model_name": llm.id, "token_usage": resp.usage.model_dump(exclude_none=True)},
        )

    def _combine_llm_outputs(self, llm_outputs: list[Optional[dict]]) -> dict:
        usage: dict[str, int] = {}
        model_name = None
        for out in llm_outputs:
            if not out:
                continue
            model_name = model_name or out.get("model_name")
            for k, v in (out.get("token_usage") or {}).items():
                if isinstance(v, int):
                    usage[k] = usage.get(k, 0) + v
        return {"model_name": model_name or self.model, "token_usage": usage}

    # ---- tokens ------------------------------------------------------------------------------------------

    def get_num_tokens_from_messages(self, messages: list[BaseMessage],
                                     tools: Optional[Sequence[Any]] = None) -> int:
        """Input tokens of ``messages`` (and ``tools``) as the model counts them: the local model's
        tokenizer and chat template; Anthropic, Vertex AI / Gemini and Bedrock's count-tokens
        endpoints; OpenAI's models' own encodings (offline); otherwise the documented estimate
        (``langchain_mesh.tokens``). Never 0 for a non-empty conversation, so ``trim_messages(...,
        token_counter=chat)`` works."""
        llm = get_llm(self.mesh, self.model, "GENERIC_COMPLETION")
        settings = (validate_settings({"tools": [convert_to_openai_tool(t) for t in tools]}) if tools
                    else validate_settings({}))
        request = CompletionRequest.model_construct(messages=to_mesh_messages(messages), settings=settings)
        return llm.mesh.count_tokens(llm, request)

    # ---- tools and structured output ---------------------------------------------------------------------

    def bind_tools(
        self,
        tools: Sequence[Union[dict[str, Any], type, Callable, BaseTool]],
        *,
        tool_choice: _ToolChoice = None,
        strict: Optional[bool] = None,
        parallel_tool_calls: Optional[bool] = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools (LangChain tools, functions, pydantic models, TypedDicts or OpenAI/Anthropic
        dicts) in the OpenAI format the seed's ``tools`` setting takes.

        ``tool_choice``: ``"auto"``, ``"any"`` / ``"required"`` / ``True``, ``"none"``, or a tool's
        name (see :func:`normalize_tool_choice`).
        """
        formatted = [convert_to_openai_tool(t, strict=strict) for t in tools]
        for t in formatted:
            if t.get("type") != "function":
                raise SettingsError(f"tool {t!r} is a provider built-in tool, which mesh LLMs do not offer; "
                                    "bind function tools", ["tools"])
        validate_settings({"tools": formatted})  # a malformed tool fails at bind time, naming the problem
        names = [t["function"]["name"] for t in formatted]
        choice = normalize_tool_choice(tool_choice, names)
        if choice is not None:
            kwargs["tool_choice"] = choice
        if parallel_tool_calls is not None:
            kwargs["parallel_tool_calls"] = parallel_tool_calls
        return super().bind(tools=formatted, **kwargs)

    def with_structured_output(
        self,
        schema: Optional[Union[dict[str, Any], type]] = None,
        *,
        method: Literal["json_schema", "function_calling", "json_mode"] = "json_schema",
        include_raw: bool = False,
        strict: Optional[bool] = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, Union[dict, Any]]:
        """Output parsed into ``schema`` (a pydantic model -> instances; a TypedDict or JSON Schema
        dict -> dicts).

        ``method``: ``"json_schema"`` (the connection constrains the output to the schema through the
        seed's ``responseFormat``), ``"function_calling"`` (a forced call of a tool named after the
        schema) or ``"json_mode"`` (any JSON object; the prompt must ask for the fields).
        ``include_raw=True`` returns ``{"raw": AIMessage, "parsed": ..., "parsing_error": ...}``.
        """
        if kwargs:
            raise ValueError(f"unexpected arguments to with_structured_output: {sorted(kwargs)}")
        is_pydantic = isinstance(schema, type) and is_basemodel_subclass(schema)
        if method == "function_calling":
            if schema is None:
                raise ValueError("method='function_calling' needs a schema")
            tool_name = convert_to_openai_tool(schema)["function"]["name"]
            llm = self.bind_tools([schema], tool_choice=tool_name, strict=strict,
                                  ls_structured_output_format={"kwargs": {"method": method, "strict": strict},
                                                               "schema": schema})
            parser: Runnable = (PydanticToolsParser(tools=[schema], first_tool_only=True) if is_pydantic  # type: ignore[list-item]
                                else JsonOutputKeyToolsParser(key_name=tool_name, first_tool_only=True))
        elif method == "json_mode":
            ls_format = {"ls_structured_output_format": {"kwargs": {"method": method}, "schema": schema}} if schema else {}
            llm = self.bind(response_format={"type": "json"}, **ls_format)
            parser = PydanticOutputParser(pydantic_object=schema) if is_pydantic else JsonOutputParser()  # type: ignore[arg-type]
        elif method == "json_schema":
            if schema is None:
                raise ValueError("method='json_schema' needs a schema")
            json_schema = (schema if isinstance(schema, dict) and ("properties" in schema or "type" in schema)
                           else convert_to_json_schema(schema))
            fmt: dict[str, Any] = {"type": "json", "schema": json_schema, "strict": bool(strict)}
            name = _schema_name(schema) or _schema_name(json_schema)
            if name:
                fmt["name"] = name
            llm = self.bind(response_format=fmt,
                            ls_structured_output_format={"kwargs": {"method": method, "strict": strict},
                                                         "schema": schema})
            parser = PydanticOutputParser(pydantic_object=schema) if is_pydantic else JsonOutputParser()  # type: ignore[arg-type]
        else:
            raise ValueError(f"method must be 'json_schema', 'function_calling' or 'json_mode', got {method!r}")

        if not include_raw:
            return llm | parser
        parser_assign = RunnablePassthrough.assign(parsed=itemgetter("raw") | parser, parsing_error=lambda _: None)
        parser_none = RunnablePassthrough.assign(parsed=lambda _: None)
        with_fallback = parser_assign.with_fallbacks([parser_none], exception_key="parsing_error")
        return RunnableMap(raw=llm) | with_fallback


allow_in_langchain_load(MeshChatModel)
