"""``sagemaker``: LLMs deployed as SageMaker endpoints, invoked through boto3's ``sagemaker-runtime``.

    sm:
      type: sagemaker
      region: eu-west-1
      # credentials: these keys, else profile_name, else the standard AWS chain (env, ~/.aws, role)
      access_key_id: "{{env:AWS_ACCESS_KEY_ID}}"
      secret_access_key: "{{env:AWS_SECRET_ACCESS_KEY}}"
      # session_token: "{{env:AWS_SESSION_TOKEN}}"
      # endpoint_url: https://vpce-...runtime.sagemaker.eu-west-1.vpce.amazonaws.com
      models:                                   # one entry per endpoint
        - {id: mistral, endpoint_name: hf-tgi-mistral-7b, handling: tgi, prompt_format: chatml}
        - {id: llama3, endpoint_name: jumpstart-llama3-8b, handling: llama}          # llama3 template
        - {id: llama2, endpoint_name: js-llama2-13b-f, handling: llama, prompt_format: dialog,
           custom_attributes: accept_eula=true}
        - {id: j2, endpoint_name: j2-ultra, handling: jurassic}
        - {id: command, endpoint_name: cohere-command, handling: cohere}
        - {id: claude, endpoint_name: claude-v2, handling: claude}
        - id: vllm
          endpoint_name: my-vllm
          handling: custom
          request_template: '{"messages": {{messages_json}}, "max_tokens": {{max_tokens}}, "stream": {{stream}}}'
          response_path: $.choices[0].message.content
          stream_path: $.choices[0].delta.content

The bodies each ``handling`` sends and reads are in :mod:`.sagemaker_wire`. ``stream`` uses
``InvokeEndpointWithResponseStream`` where the container streams (TGI, Llama on TGI, Cohere, a
custom endpoint with ``stream_path``; ``streaming: false`` turns it off) and otherwise answers in
one chunk. SDK retries are off (the mesh retries), timeouts come from ``timeout``. Errors:
``ModelError`` is mapped by the container's own status (``OriginalStatusCode``), ``ValidationError``
to 400 (404 when the endpoint does not exist), throttling to 429, ``ServiceUnavailable`` to 503; a
stream that breaks, or whose container reports ``ModelStreamError``, is a ``StreamInterruptedError``.
boto3 has no async client: the async methods run the sync ones in a worker thread.
"""

from __future__ import annotations

import json
from typing import Any, Iterator, Optional

from pydantic import Field, PrivateAttr, model_validator

from ...config import ConnectionConfig, ModelConfig
from ...errors import (
    CredentialError,
    NotFoundError,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeoutError,
    error_for_status,
    parse_retry_after,
)
from ...schema import CompletionRequest, CompletionResponse, ModelCapabilities, StreamEvent
from . import wire
from ..transport.aws import AWSConnectionConfig, make_boto_client
from ..base import Connection

__all__ = ["SageMakerConnection", "SageMakerConfig", "SageMakerEndpoint"]


class SageMakerEndpoint(ModelConfig):
    endpoint_name: str
    handling: wire.Handling = "tgi"
    #: how a conversation becomes one prompt (default: llama3 for llama handling, plain otherwise);
    #: ``dialog`` sends Llama 2's ``[[{role, content}]]`` form instead
    prompt_format: Optional[wire.PromptFormat] = None
    #: whether to use the streaming API (default: where the handling's container streams)
    streaming: Optional[bool] = None
    custom_attributes: Optional[str] = None  # X-Amzn-SageMaker-Custom-Attributes (accept_eula=true)
    target_variant: Optional[str] = None
    target_model: Optional[str] = None  # multi-model endpoints (non-streaming only, as the API has it)
    inference_component: Optional[str] = None
    request_template: Optional[str] = None
    response_path: Optional[str] = None
    stream_path: Optional[str] = None
    _template: Optional[wire.RequestTemplate] = PrivateAttr(default=None)
    _response_path: Optional[wire.JsonPath] = PrivateAttr(default=None)
    _stream_path: Optional[wire.JsonPath] = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _coherent(self) -> "SageMakerEndpoint":
        custom_keys = [k for k in ("request_template", "response_path", "stream_path") if getattr(self, k)]
        if self.handling == "custom":
            if not (self.request_template and self.response_path):
                raise ValueError("custom handling needs 'request_template' and 'response_path'")
            self._template = wire.RequestTemplate(self.request_template)
            self._response_path = wire.JsonPath(self.response_path)
            self._stream_path = wire.JsonPath(self.stream_path) if self.stream_path else None
            if self.streaming and self._stream_path is None:
                raise ValueError("streaming a custom endpoint needs 'stream_path'")
        elif custom_keys:
            raise ValueError(f"{', '.join(custom_keys)} apply to handling: custom only")
        if self.prompt_format == "dialog" and self.handling != "llama":
            raise ValueError("prompt_format 'dialog' is Llama 2's JumpStart form: it needs handling: llama")
        if self.prompt_format == "dialog" and self.streaming:
            raise ValueError("the Llama 2 dialog container does not stream")
        return self

    @property
    def format(self) -> str:
        return self.prompt_format or ("llama3" if self.handling == "llama" else "plain")

    @property
    def streams(self) -> bool:
        default = wire.streams_by_default(self.handling, self.format, self.stream_path)
        return default if self.streaming is None else self.streaming


class SageMakerConfig(AWSConnectionConfig):
    type: str = "sagemaker"
    models: list[SageMakerEndpoint] = Field(min_length=1)  # type: ignore[assignment]


class SageMakerConnection(Connection):
    type_name = "sagemaker"
    config_model = SageMakerConfig
    config: SageMakerConfig

    def __init__(self, name: str, config: ConnectionConfig):
        super().__init__(name, config)
        self._sm: Any = None

    # ---- models ------------------------------------------------------------------------------------------

    def _endpoint(self, model: str) -> SageMakerEndpoint:
        return next(e for e in self.config.models if e.id == model)

    def capabilities_for(self, model: str) -> ModelCapabilities:
        ep = self._endpoint(model)
        grammar = ep.handling in ("tgi", "llama") and ep.format != "dialog"
        return ModelCapabilities(streaming=ep.streams, json_output=grammar, structured_output=grammar)

    # ---- client --------------------------------------------------------------------------------------------

    def _client(self) -> Any:
        with self._lock:
            if self._sm is None:
                self._sm = self._make_client()
            return self._sm

    def _make_client(self) -> Any:
        return make_boto_client("sagemaker-runtime", self.config, self.name, "sagemaker")

    # ---- errors ---------------------------------------------------------------------------------------------

    def _error(self, e: Exception, partial: Optional[wire.StreamDecoder]) -> Exception:
        """A botocore/urllib3 failure as the mesh's error (``partial``: it happened mid-stream)."""
        from botocore import exceptions as bx

        if partial is not None:  # the container or the connection failed after the stream began
            err = getattr(e, "response", {}).get("Error", {})
            why = f"{err.get('Code')}: {err.get('Message')}" if err else f"{type(e).__name__}: {e}"
            return partial.interrupted(why)
        if isinstance(e, bx.ClientError):
            return self._client_error(e)
        if isinstance(e, (bx.ReadTimeoutError, bx.ConnectTimeoutError)):
            return ProviderTimeoutError(f"{wire.PROVIDER} did not answer within {self.config.timeout}s",
                                        provider=wire.PROVIDER)
        if isinstance(e, bx.NoCredentialsError):
            return CredentialError(f"connections.{self.name}: no AWS credentials found; set access_key_id and "
                                   "secret_access_key, profile_name, or the AWS environment")
        return ProviderConnectionError(f"cannot reach {wire.PROVIDER}: {e}", provider=wire.PROVIDER)

    @staticmethod
    def _client_error(e: Any) -> ProviderError:
        resp = e.response
        err, meta = resp.get("Error") or {}, resp.get("ResponseMetadata") or {}
        code, message = err.get("Code") or "", err.get("Message") or ""
        status = int(meta.get("HTTPStatusCode") or 500)
        retry_after = parse_retry_after({k.lower(): v for k, v in (meta.get("HTTPHeaders") or {}).items()})
        if code == "ModelError":
            # the container's own answer decides: a 400 from the model is the caller's fault, a 5xx transient
            status = int(resp.get("OriginalStatusCode") or status)
            message = resp.get("OriginalMessage") or message
        text = f"{code}: {message}" if code else message
        if code == "ValidationError" and "not found" in message.lower():
            return NotFoundError(f"{wire.PROVIDER} answered HTTP {status}: {text}", status=status,
                                 provider=wire.PROVIDER, provider_message=text)
        return error_for_status(status, text, provider=wire.PROVIDER, retry_after=retry_after)

    # ---- completion -------------------------------------------------------------------------------------

    def _prepare(self, model: str, request: CompletionRequest,
                 stream: bool) -> tuple[SageMakerEndpoint, dict[str, Any]]:
        ep = self._endpoint(model)
        wire.check_request(ep.handling, ep.format, request, ep._template)
        body = wire.request_body(ep.handling, ep.format, request, stream=stream, template=ep._template)
        kwargs: dict[str, Any] = {"EndpointName": ep.endpoint_name, "Body": json.dumps(body).encode(),
                                  "ContentType": "application/json"}
        # Cohere's containers stream JSON lines; everything else answers (and streams) JSON
        kwargs["Accept"] = "application/jsonlines" if stream and ep.handling == "cohere" else "application/json"
        for key, value in (("CustomAttributes", ep.custom_attributes), ("TargetVariant", ep.target_variant),
                           ("InferenceComponentName", ep.inference_component)):
            if value:
                kwargs[key] = value
        if ep.target_model and not stream:
            kwargs["TargetModel"] = ep.target_model
        return ep, kwargs

    def complete(self, model: str, request: CompletionRequest) -> CompletionResponse:
        ep, kwargs = self._prepare(model, request, stream=False)
        try:
            resp = self._client().invoke_endpoint(**kwargs)
            raw = resp["Body"].read()
        except Exception as e:  # botocore and urllib3 failures: mapped, the rest re-raised
            raise self._mapped(e) from None
        return wire.parse_response(ep.handling, ep.format, raw, model, ep._response_path)

    def stream(self, model: str, request: CompletionRequest) -> Iterator[StreamEvent]:
        ep = self._endpoint(model)
        if not ep.streams:
            return super().stream(model, request)
        ep, kwargs = self._prepare(model, request, stream=True)  # a bad request fails here, not on next()
        return self._events(ep, model, kwargs)

    def _events(self, ep: SageMakerEndpoint, model: str, kwargs: dict[str, Any]) -> Iterator[StreamEvent]:
        try:
            resp = self._client().invoke_endpoint_with_response_stream(**kwargs)
        except Exception as e:
            raise self._mapped(e) from None
        decoder = wire.StreamDecoder(ep.handling, model, ep._stream_path)
        body = resp["Body"]
        try:
            try:
                for event in body:
                    part = event.get("PayloadPart")
                    if part is not None:
                        yield from decoder.feed(part.get("Bytes") or b"")
            except Exception as e:
                raise self._mapped(e, decoder) from None
            yield from decoder.end()
        finally:
            body.close()

    def _mapped(self, e: Exception, decoder: Optional[wire.StreamDecoder] = None) -> Exception:
        """The mesh error for a transport/SDK failure; anything else (our own errors, bugs) unchanged."""
        from botocore.exceptions import BotoCoreError, ClientError
        from urllib3.exceptions import HTTPError

        if isinstance(e, (BotoCoreError, ClientError, HTTPError)):
            return self._error(e, decoder)
        return e

    def close(self) -> None:
        with self._lock:
            client, self._sm = self._sm, None
        if client is not None:
            client.close()

