"""``MeshLLM``: a mesh LLM as a LangChain text-completion model (``BaseLLM``).

A prompt becomes one user message (:meth:`CompletionRequest.from_prompt`, also behind the server's
``POST /v1/completions``); the rest is the chat path: the same request building, the same
``mesh.complete`` / ``mesh.acomplete`` / ``mesh.stream`` / ``mesh.astream`` dispatch.
"""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator, ClassVar, Iterator, Optional

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseLLM
from langchain_core.outputs import Generation, GenerationChunk, LLMResult

from ..errors import MeshError
from ..schema import CompletionRequest, CompletionResponse, StreamFooter
from ._common import (
    MeshModelFields,
    get_llm,
)
from .convert import usage_to_metadata
from .serialization import allow_in_langchain_load

__all__ = ["MeshLLM"]


class MeshLLM(MeshModelFields, BaseLLM):
    """A mesh LLM as a LangChain text-completion model: ``MeshLLM(model=..., mesh=...).invoke("...")``."""

    _ls_model_type: ClassVar[str] = "llm"

    @property
    def _llm_type(self) -> str:
        return "mesh-llm"


    def _request(self, prompt: str, stop: Optional[list[str]], kwargs: dict[str, Any]):  # type: ignore[no-untyped-def]
        kwargs = dict(kwargs)
        model = kwargs.pop("model", None) or self.model
        llm = get_llm(self.mesh, model, "GENERIC_COMPLETION")
        settings = self._call_settings(stop, kwargs)
        return llm, CompletionRequest.from_prompt(prompt, settings)  # the path of POST /v1/completions too

    @staticmethod
    def _generation(resp: CompletionResponse, llm: Any) -> Generation:
        if not resp.success:
            raise MeshError(resp.error or f"{llm.id} returned an unsuccessful response")
        return Generation(text=resp.text, generation_info={
            "finish_reason": resp.finish_reason, "model_name": llm.id,
            "usage_metadata": usage_to_metadata(resp.usage)})

    def _llm_output(self, gens: list[Generation]) -> dict[str, Any]:
        usage: dict[str, int] = {}
        for g in gens:
            for k in ("input_tokens", "output_tokens", "total_tokens"):
                usage[k] = usage.get(k, 0) + int(((g.generation_info or {}).get("usage_metadata") or {}).get(k, 0))
        return {"model_name": self.model, "token_usage": usage}

    def _complete_one(self, prompt: str, stop: Optional[list[str]], run_manager: Optional[CallbackManagerForLLMRun],
                      kwargs: dict[str, Any]) -> Generation:
        if self.streaming:
            final: Optional[GenerationChunk] = None
            for chunk in self._stream(prompt, stop, run_manager, **kwargs):
                final = chunk if final is None else final + chunk
            if final is None:
                return Generation(text="")
            return Generation(text=final.text, generation_info=final.generation_info)
        llm, request = self._request(prompt, stop, kwargs)
        return self._generation(llm.mesh.complete(llm, request, timeout=self.timeout, max_retries=self.max_retries), llm)

    def _generate(self, prompts: list[str], stop: Optional[list[str]] = None,
                  run_manager: Optional[CallbackManagerForLLMRun] = None, **kwargs: Any) -> LLMResult:
        gens = [self._complete_one(p, stop, run_manager, kwargs) for p in prompts]
        return LLMResult(generations=[[g] for g in gens], llm_output=self._llm_output(gens))

    async def _acomplete_one(self, prompt: str, stop: Optional[list[str]],
                             run_manager: Optional[AsyncCallbackManagerForLLMRun], kwargs: dict[str, Any]) -> Generation:
        if self.streaming:
            final: Optional[GenerationChunk] = None
            async for chunk in self._astream(prompt, stop, run_manager, **kwargs):
                final = chunk if final is None else final + chunk
            if final is None:
                return Generation(text="")
            return Generation(text=final.text, generation_info=final.generation_info)
        llm, request = self._request(prompt, stop, kwargs)
        resp = await llm.mesh.acomplete(llm, request, timeout=self.timeout, max_retries=self.max_retries)
        return self._generation(resp, llm)

    async def _agenerate(self, prompts: list[str], stop: Optional[list[str]] = None,
                         run_manager: Optional[AsyncCallbackManagerForLLMRun] = None, **kwargs: Any) -> LLMResult:
        gens = list(await asyncio.gather(*(self._acomplete_one(p, stop, run_manager, kwargs) for p in prompts)))
        return LLMResult(generations=[[g] for g in gens], llm_output=self._llm_output(gens))

    @staticmethod
    def _chunk(ev: Any, llm_id: str) -> Optional[GenerationChunk]:
        if isinstance(ev, StreamFooter):
            return GenerationChunk(text="", generation_info={
                "finish_reason": ev.finish_reason, "model_name": llm_id,
                "usage_metadata": usage_to_metadata(ev.usage)})
        if not ev.text:
            return None
        return GenerationChunk(text=ev.text)

    def _stream(self, prompt: str, stop: Optional[list[str]] = None,
                run_manager: Optional[CallbackManagerForLLMRun] = None, **kwargs: Any) -> Iterator[GenerationChunk]:
        llm, request = self._request(prompt, stop, kwargs)
        for ev in llm.mesh.stream(llm, request, timeout=self.timeout, max_retries=self.max_retries):
            chunk = self._chunk(ev, llm.id)
            if chunk is None:
                continue
            if run_manager is not None and chunk.text:
                run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    async def _astream(self, prompt: str, stop: Optional[list[str]] = None,
                       run_manager: Optional[AsyncCallbackManagerForLLMRun] = None,
                       **kwargs: Any) -> AsyncIterator[GenerationChunk]:
        llm, request = self._request(prompt, stop, kwargs)
        async for ev in llm.mesh.astream(llm, request, timeout=self.timeout, max_retries=self.max_retries):
            chunk = self._chunk(ev, llm.id)
            if chunk is None:
                continue
            if run_manager is not None and chunk.text:
                await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk


allow_in_langchain_load(MeshLLM)
