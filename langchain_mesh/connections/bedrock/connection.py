"""``bedrock``: Amazon Bedrock through boto3's ``bedrock-runtime`` client.

Chat (Claude, Mistral, Llama, Cohere Command, Titan Text, Nova, AI21) through **Converse** and
**ConverseStream**; embeddings (Titan Text Embeddings, Cohere Embed) and images (Stability SD3 Large,
Stable Image Core and Ultra, SDXL, Titan Image Generator; image-to-image modes and masks per model, see
``bedrock_wire.image_bodies`` and the README's table) through **InvokeModel**::

    connections:
      aws:
        type: bedrock
        region: us-east-1
        access_key_id: "{{env:AWS_ACCESS_KEY_ID}}"       # or profile_name: prod, or nothing: the
        secret_access_key: "{{env:AWS_SECRET_ACCESS_KEY}}" #   standard AWS chain (env, ~/.aws, roles)
        # session_token: "{{env:AWS_SESSION_TOKEN}}"
        # endpoint_url: https://vpce-123.bedrock-runtime.us-east-1.vpce.amazonaws.com
        inference_profile: us          # us | eu | apac | global: "us." + each model id
        models:
          - {id: anthropic.claude-3-5-sonnet-20240620-v1:0}
          - {id: amazon.titan-embed-text-v2:0, use_inference_profile: false}   # it has no profile
          - {id: "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/abc123",
             model: anthropic.claude-3-haiku-20240307-v1:0}                     # capabilities from here

Settings: ``temperature``, ``topP``, ``maxOutputTokens``, ``stopSequences`` go in ``inferenceConfig``;
``tools``/``toolChoice`` in ``toolConfig`` (``required`` is ``any``; ``none`` leaves the tools out,
Converse having no such choice); ``topK`` in ``additionalModelRequestFields`` where the family has it
(Claude/Mistral ``top_k``, Cohere ``k``, Nova ``inferenceConfig.topK``); penalties and ``seed`` for
Cohere Command R; ``responseFormat`` as ``outputConfig`` for models with structured outputs;
``extra`` adds Converse keys (``guardrailConfig``...) or model fields. Anything else is refused with a
:class:`SettingsError` naming it (``drop_unsupported_settings: true`` drops it instead). Models whose
Converse takes no system prompt get it at the head of the first user turn; models whose
ConverseStream takes no tools are answered through Converse and streamed as one chunk.

boto3 has no asyncio: the async methods are the base class's, running each call (and each stream
event) in a worker thread. botocore's retries are off (the mesh's retry policy retries).
"""

from __future__ import annotations

import json
from typing import Any, Iterator, Literal, Optional

from pydantic import Field

from ...config import ConnectionConfig, ModelConfig
from ...errors import (
    BadRequestError,
    CredentialError,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeoutError,
    StreamInterruptedError,
    parse_retry_after,
)
from ...schema import (
    CompletionRequest,
    CompletionResponse,
    EmbeddingRequest,
    EmbeddingResponse,
    ImageGenerationRequest,
    ImageGenerationResponse,
    ModelCapabilities,
    ModelInfo,
    StreamEvent,
)
from . import wire
from ..transport.aws import AWSConnectionConfig, make_boto_client
from ..base import Connection
from ..image_settings import ImageTranslation

__all__ = ["BedrockConnection", "BedrockConfig", "BedrockModelConfig"]


class BedrockModelConfig(ModelConfig):
    #: the foundation model behind an ARN id (an application inference profile): its capabilities
    model: Optional[str] = None
    #: false for a model without a cross-region profile when the connection sets ``inference_profile``
    use_inference_profile: bool = True


class BedrockConfig(AWSConnectionConfig):
    type: str = "bedrock"
    #: a cross-region inference profile for every model (its id gets this prefix), ARNs excepted
    inference_profile: Optional[Literal["us", "eu", "apac", "global"]] = None
    drop_unsupported_settings: bool = False
    #: how far image-to-image moves from the input (Stability ``strength``; Titan gets 1 - this)
    image_strength: float = Field(default=0.5, ge=0, le=1)
    #: texts per Cohere Embed request (Bedrock takes at most 96)
    embedding_batch_size: int = Field(default=96, ge=1, le=96)
    models: Optional[list[BedrockModelConfig]] = None  # type: ignore[assignment]

    model_config_class = BedrockModelConfig


class BedrockConnection(Connection):
    type_name = "bedrock"
    embeds_images = True
    config_model = BedrockConfig
    config: BedrockConfig

    def __init__(self, name: str, config: ConnectionConfig):
        super().__init__(name, config)
        self._boto: Any = None

    # ---- models ------------------------------------------------------------------------------------

    def default_models(self) -> list[ModelInfo]:
        return [wire.model_info(m) for m in wire.DEFAULT_MODELS]

    def _model_config(self, model: str) -> Optional[BedrockModelConfig]:
        return next((m for m in self.config.models or [] if m.id == model), None)

    def underlying_model(self, model: str) -> str:
        cfg = self._model_config(model)
        return cfg.model if cfg is not None and cfg.model else wire.base_model_id(model)

    def known_model(self, model: ModelConfig) -> Optional[ModelInfo]:
        base = getattr(model, "model", None) or model.id
        if wire.is_arn(base):  # an ARN without its declared model: nothing known
            return None
        info = wire.model_info(base)
        return info.model_copy(update={"id": model.id})

    def capabilities_for(self, model: str) -> ModelCapabilities:
        return wire.capabilities_for(self.underlying_model(model))

    def _capabilities(self, model: str) -> ModelCapabilities:
        cfg = self._model_config(model)
        if cfg is not None and cfg.capabilities is not None:
            return cfg.capabilities
        return self.capabilities_for(model)

    def model_id(self, model: str) -> str:
        """The ``modelId`` sent for an LLM id's model part."""
        cfg = self._model_config(model)
        profile = self.config.inference_profile if cfg is None or cfg.use_inference_profile else None
        return wire.wire_model_id(model, profile)

    # ---- the boto3 client ----------------------------------------------------------------------------

    def _client(self) -> Any:
        if self._boto is None:
            with self._lock:
                if self._boto is None:
                    self._boto = self._make_client()
        return self._boto

    def _make_client(self) -> Any:
        return make_boto_client("bedrock-runtime", self.config, self.name, "bedrock")

    def close(self) -> None:
        with self._lock:
            client, self._boto = self._boto, None
        if client is not None:
            client.close()

    # ---- errors ---------------------------------------------------------------------------------------

    def _error(self, e: BaseException) -> BaseException:
        """botocore's exception as the mesh's error type; anything else unchanged."""
        from botocore import exceptions as bx

        if isinstance(e, bx.ClientError):
            headers = (e.response.get("ResponseMetadata") or {}).get("HTTPHeaders") or {}
            return wire.client_error(e.response, parse_retry_after(headers))
        if isinstance(e, (bx.ConnectTimeoutError, bx.ReadTimeoutError)):
            return ProviderTimeoutError(f"{wire.PROVIDER} did not answer within {self.config.timeout}s "
                                        f"(connection {self.name!r}): {e}", provider=wire.PROVIDER)
        if isinstance(e, (bx.EndpointConnectionError, bx.HTTPClientError)):
            return ProviderConnectionError(f"cannot reach {wire.PROVIDER}: {e}", provider=wire.PROVIDER)
        if isinstance(e, (bx.NoCredentialsError, bx.PartialCredentialsError)):
            return CredentialError(f"no usable AWS credentials for connections.{self.name}: {e}; set "
                                   "access_key_id/secret_access_key or profile_name, or configure the AWS chain")
        if isinstance(e, bx.ParamValidationError):
            return BadRequestError(f"botocore refused the {wire.PROVIDER} request: {e}", provider=wire.PROVIDER)
        return e

    def _call(self, operation: str, **kwargs: Any) -> Any:
        try:
            return getattr(self._client(), operation)(**kwargs)
        except Exception as e:  # noqa: BLE001 - mapped, or re-raised as it is
            raise self._error(e) from None

    # ---- completion -----------------------------------------------------------------------------------

    def _kwargs(self, model: str, request: CompletionRequest) -> dict[str, Any]:
        under = self.underlying_model(model)
        drop = self.config.drop_unsupported_settings
        wire.check_request(under, request, self._capabilities(model), drop)
        if drop:
            request = request.model_copy(update={"settings": request.settings.model_copy(
                update={k: None for k in wire.unsupported_settings(under, request)})})
        return wire.converse_kwargs(under, self.model_id(model), request)

    # ---- tokens ---------------------------------------------------------------------------------------

    def count_tokens(self, model: str, request: CompletionRequest) -> int:
        """Bedrock's own count (``CountTokens`` with the Converse input: messages, system, tools)."""
        kwargs = wire.converse_kwargs(self.underlying_model(model), self.model_id(model), request)
        converse = {k: kwargs[k] for k in ("messages", "system", "toolConfig", "additionalModelRequestFields")
                    if kwargs.get(k)}
        resp = self._call("count_tokens", modelId=kwargs["modelId"], input={"converse": converse})
        n = resp.get("inputTokens")
        if not isinstance(n, int):
            raise ProviderError(f"{wire.PROVIDER} answered CountTokens without inputTokens", provider=wire.PROVIDER)
        return n

    def complete(self, model: str, request: CompletionRequest) -> CompletionResponse:
        return wire.parse_converse(self._call("converse", **self._kwargs(model, request)), model)

    def stream(self, model: str, request: CompletionRequest) -> Iterator[StreamEvent]:
        # validated here, not on first next(): a bad request fails where it is made
        kwargs = self._kwargs(model, request)
        if not self._capabilities(model).streaming or \
                ("toolConfig" in kwargs and not wire.streams_tool_use(self.underlying_model(model))):
            return self._answer_as_stream(model, kwargs)
        return self._events(model, kwargs)

    def _answer_as_stream(self, model: str, kwargs: dict[str, Any]) -> Iterator[StreamEvent]:
        # a generator, so the call happens on first next() (in astream: in the worker thread)
        yield from wire.as_chunks(wire.parse_converse(self._call("converse", **kwargs), model))

    def _events(self, model: str, kwargs: dict[str, Any]) -> Iterator[StreamEvent]:
        from botocore import exceptions as bx
        from urllib3.exceptions import HTTPError

        stream = self._call("converse_stream", **kwargs)["stream"]
        decoder = wire.StreamDecoder(model)
        try:
            for event in stream:
                chunk = decoder.feed(event)
                if chunk is not None:
                    yield chunk
        except bx.EventStreamError as e:  # an exception event: typed, unless the answer had begun
            err = self._error(e)
            if decoder.produced():
                raise self._interrupted(decoder, str(err), err) from None
            raise err from None
        except (bx.BotoCoreError, HTTPError) as e:
            raise self._interrupted(decoder, f"{type(e).__name__}: {e}") from None
        finally:
            stream.close()  # a consumer that stops early releases the connection
        yield decoder.footer()

    @staticmethod
    def _interrupted(decoder: wire.StreamDecoder, why: str, cause: Optional[BaseException] = None
                     ) -> StreamInterruptedError:
        status = getattr(cause, "status", None)
        return StreamInterruptedError(
            f"the {wire.PROVIDER} stream broke before it finished ({why}); the partial answer was not returned "
            "as a success", partial_text="".join(decoder.text), provider=wire.PROVIDER, status=status,
            provider_message=getattr(cause, "provider_message", None))

    # ---- embeddings and images (InvokeModel) ---------------------------------------------------------

    def _invoke(self, model: str, body: dict[str, Any]) -> tuple[dict[str, Any], int]:
        """One InvokeModel call: its JSON answer and the input tokens Bedrock counted (a header)."""
        resp = self._call("invoke_model", modelId=self.model_id(model), body=json.dumps(body),
                          contentType="application/json", accept="application/json")
        raw = resp["body"].read()
        try:
            answer = json.loads(raw)
        except ValueError:
            raise ProviderError(f"{wire.PROVIDER} answered with a body that is not JSON: {raw[:200]!r}",
                                provider=wire.PROVIDER) from None
        headers = (resp.get("ResponseMetadata") or {}).get("HTTPHeaders") or {}
        return answer, int(headers.get("x-amzn-bedrock-input-token-count") or 0)

    def embed(self, model: str, request: EmbeddingRequest) -> EmbeddingResponse:
        under = self.underlying_model(model)
        bodies = wire.embedding_bodies(under, request, self.config.embedding_batch_size)
        return wire.parse_embeddings(model, [self._invoke(model, b) for b in bodies])

    def generate_images(self, model: str, request: ImageGenerationRequest) -> ImageGenerationResponse:
        t = ImageTranslation(wire.PROVIDER, model, request)
        bodies = wire.image_bodies(self.underlying_model(model), request, self.config.image_strength, t)
        mime = request.mime_type
        return t.finish(wire.parse_images(model, [self._invoke(model, b)[0] for b in bodies], mime))

