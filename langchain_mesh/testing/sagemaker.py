"""A local SageMaker Runtime API, for offline tests of the ``sagemaker`` connection with the real boto3 client.

Speaks ``InvokeEndpoint`` (``POST /endpoints/{name}/invocations``) and
``InvokeEndpointWithResponseStream`` (``POST /endpoints/{name}/invocations-response-stream``, an
``application/vnd.amazon.eventstream`` body of ``PayloadPart`` events, CRCs and all), the way the
``rest-json`` protocol and botocore expect them, so pointing ``boto3.client("sagemaker-runtime",
endpoint_url=srv.url)`` at it exercises botocore's parameter validation, SigV4 signing and event-stream
decoding::

    with SageMakerServer(endpoints={"tgi-ep": "tgi", "j2": "jurassic"}) as srv:
        srv.script(text="Paris")                                   # the next answer
        srv.script(status=429, error_message="slow down")          # ThrottlingException
        srv.script(status=400, error_type="ModelError",            # the container answered 400
                   error_message="bad input")
        srv.script(text="a b c d", cut_after=2)                    # the stream dies after 2 tokens
        srv.script(text="a b c", cut_after=1, error_type="ModelStreamError")   # an error event mid-stream
        srv.last_request.json                                      # the body the container received

Each endpoint runs one **container** kind, validating the body and answering as that container does:
``tgi`` (HF TGI: ``inputs``/``parameters``, ``[{"generated_text", "details"}]``, streamed as
``data:{"token"...}`` lines when the body says ``"stream": true``), ``huggingface`` (the HF toolkit
pipeline), ``llama`` (Llama 2's JumpStart dialog form; needs ``accept_eula=true``), ``jurassic``,
``cohere`` (generate; JSON lines when streaming), ``claude`` (text completions) and ``custom`` (any
JSON; the answer is OpenAI-shaped and, unscripted, its text is the received body: an echo of the
rendered template). Stream payload lines are split across two ``PayloadPart`` events, as
SageMaker does with arbitrary chunking, so a client must reassemble them.

Every request is checked first as AWS does: SigV4 (``Authorization`` with the configured access key,
region and service ``sagemaker``, signature recomputed with the secret, ``X-Amz-Date`` within 5
minutes, ``X-Amz-Security-Token`` when a session token is configured): failures answer 403
``UnrecognizedClientException`` / ``InvalidSignatureException``. An unknown endpoint is 400
``ValidationError`` ("Endpoint ... not found"); a body its container rejects is 424 ``ModelError``
with the container's ``OriginalStatusCode``/``OriginalMessage``. Errors carry ``x-amzn-ErrorType``.
Unscripted, a completion echoes the prompt (the last user turn for dialog/claude containers).

``python -m langchain_mesh.testing.sagemaker --port 8080`` serves it (key ``AKIDTEST`` / ``test-secret``,
region ``us-east-1``; each endpoint name's container is read from its prefix: ``tgi-...``, ``cohere-...``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import re
import time
import uuid
from typing import Any, Iterator, Optional
from urllib.parse import quote

from .aws_eventstream import event_message, exception_message, write_stream
from .fakes import count_tokens, stream_pieces
from .wire import RecordedRequest, Reply, Responder, WireServer, serve_main

__all__ = ["SageMakerServer", "CONTAINERS"]

CONTAINERS = ("tgi", "huggingface", "llama", "jurassic", "cohere", "claude", "custom")
ACCOUNT = "123456789012"
_PATH = re.compile(r"^/endpoints/([^/]+)/(invocations|invocations-response-stream)$")
_AUTH = re.compile(r"AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request,\s*"
                   r"SignedHeaders=([^,]+),\s*Signature=([0-9a-f]{64})$")
_DEFAULT_CODES = {400: "ValidationError", 403: "AccessDeniedException", 429: "ThrottlingException",
                  500: "InternalFailure", 503: "ServiceUnavailable"}
_TGI_PARAMS = {"max_new_tokens", "temperature", "top_p", "top_k", "stop", "seed", "frequency_penalty",
               "repetition_penalty", "do_sample", "details", "decoder_input_details", "return_full_text",
               "grammar", "watermark", "truncate", "best_of", "typical_p", "top_n_tokens", "adapter_id"}
_HF_PARAMS = {"max_new_tokens", "temperature", "top_p", "top_k", "do_sample", "return_full_text",
              "repetition_penalty", "max_length", "num_return_sequences"}
_DIALOG_PARAMS = {"max_new_tokens", "temperature", "top_p"}
_JURASSIC_KEYS = {"prompt", "maxTokens", "minTokens", "temperature", "topP", "stopSequences", "numResults",
                  "topKReturn", "presencePenalty", "countPenalty", "frequencyPenalty"}
_COHERE_KEYS = {"prompt", "max_tokens", "temperature", "p", "k", "stop_sequences", "seed", "frequency_penalty",
                "presence_penalty", "stream", "return_likelihoods", "truncate", "num_generations"}
_CLAUDE_KEYS = {"prompt", "max_tokens_to_sample", "temperature", "top_p", "top_k", "stop_sequences"}


class _ContainerError(Exception):
    """The model container rejected the body: answered as ``ModelError`` with its own status."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


class SageMakerServer(WireServer):
    provider = "sagemaker"

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, endpoints: Optional[dict[str, str]] = None,
                 access_key_id: str = "AKIDTEST", secret_access_key: str = "test-secret",
                 session_token: Optional[str] = None, region: str = "us-east-1"):
        """``endpoints`` maps endpoint names to container kinds; None reads the kind from the name's prefix
        (``tgi-x`` -> tgi) so any name whose prefix is a kind exists."""
        super().__init__(host, port)
        bad = sorted(set((endpoints or {}).values()) - set(CONTAINERS))
        if bad:
            raise ValueError(f"unknown container kinds {bad}; use {CONTAINERS}")
        self.endpoints = dict(endpoints) if endpoints is not None else None
        self.access_key_id = access_key_id
        self.secret_access_key = secret_access_key
        self.session_token = session_token
        self.region = region

    # ---- routing -----------------------------------------------------------------------------------------

    def container(self, name: str) -> Optional[str]:
        if self.endpoints is not None:
            return self.endpoints.get(name)
        prefix = name.split("-", 1)[0]
        return prefix if prefix in CONTAINERS else None

    def handle(self, request: RecordedRequest, respond: Responder) -> None:
        problem = self._auth_problem(request)
        if problem:
            self._error(respond, 403, *problem)
            return
        m = _PATH.match(request.path)
        if m is None or request.method != "POST":
            self._error(respond, 404, "UnknownOperationException", f"no operation {request.method} {request.path}")
            return
        name, stream = m.group(1), m.group(2) == "invocations-response-stream"
        kind = self.container(name)
        if kind is None:
            self._error(respond, 400, "ValidationError",
                        f"Endpoint {name} of account {ACCOUNT} not found.")
            return
        try:
            body = json.loads(request.body)
        except ValueError:
            self._model_error(respond, name, 400, "the request body is not JSON")
            return
        try:
            self._validate(kind, body, request)
        except _ContainerError as e:
            self._model_error(respond, name, e.status, str(e))
            return
        reply = self.next_reply() or Reply()
        if reply.delay:
            time.sleep(reply.delay)
        if reply.status != 200:
            if reply.error_type == "ModelError":
                self._model_error(respond, name, reply.status, reply.error_message or "scripted model error",
                                  reply.headers)
            else:
                code = reply.error_type or _DEFAULT_CODES.get(reply.status, "InternalFailure")
                self._error(respond, reply.status, code, reply.error_message or f"scripted HTTP {reply.status}", reply.headers)
            return
        text, finish = self._answer_text(kind, body, reply)
        headers = {"x-amzn-RequestId": str(uuid.uuid4()), "x-Amzn-Invoked-Production-Variant": "AllTraffic",
                   **reply.headers}
        streaming = stream and (body.get("stream") is True or kind == "custom")
        if not streaming:
            answer = reply.json_body if reply.json_body is not None else self._answer(kind, body, text, finish)
            data = json.dumps(answer).encode()
            if stream:  # a container that does not stream: its whole answer in one part
                write_stream(respond, [event_message("PayloadPart", data)],
                             headers={"X-Amzn-SageMaker-Content-Type": "application/json", **headers})
            else:
                respond.bytes(200, data, "application/json", headers)
            return
        lines = list(self._stream_lines(kind, body, text, finish))
        messages = []
        for line in lines:  # each line split across two parts, as SageMaker's chunking may do
            half = max(1, len(line) // 2)
            messages += [event_message("PayloadPart", line[:half]), event_message("PayloadPart", line[half:])]
        cut = reply.cut_after * 2 if reply.cut_after is not None else None
        if reply.error_type == "ModelStreamError":
            messages = messages[:cut] + [exception_message("ModelStreamError", {
                "Message": reply.error_message or "the model container failed mid-stream", "ErrorCode": "500"})]
            cut = None
        write_stream(respond, messages, headers={"X-Amzn-SageMaker-Content-Type": "application/json", **headers},
                     chunk_delay=reply.chunk_delay, cut_after=cut)

    # ---- errors ---------------------------------------------------------------------------------------------

    @staticmethod
    def _error(respond: Responder, status: int, code: str, message: str, headers: Optional[dict] = None) -> None:
        respond.json(status, {"message": message},
                     {"x-amzn-ErrorType": f"{code}:http://internal.amazon.com/coral/com.amazon.sagemaker/",
                      "x-amzn-RequestId": str(uuid.uuid4()), **(headers or {})})

    def _model_error(self, respond: Responder, name: str, status: int, message: str,
                     headers: Optional[dict] = None) -> None:
        kind = "client" if status < 500 else "server"
        respond.json(424, {
            "ErrorCode": f"{kind.upper()}_ERROR_FROM_MODEL", "OriginalStatusCode": status, "OriginalMessage": message,
            "LogStreamArn": f"arn:aws:logs:{self.region}:{ACCOUNT}:log-group:/aws/sagemaker/Endpoints/{name}",
            "Message": f"Received {kind} error ({status}) from primary with message \"{message}\". See the log "
                       f"group /aws/sagemaker/Endpoints/{name} for more information."},
            {"x-amzn-ErrorType": "ModelError:http://internal.amazon.com/coral/com.amazon.sagemaker/",
             "x-amzn-RequestId": str(uuid.uuid4()), **(headers or {})})

    # ---- SigV4 ----------------------------------------------------------------------------------------------

    def _auth_problem(self, request: RecordedRequest) -> Optional[tuple[str, str]]:
        m = _AUTH.match(request.headers.get("Authorization") or "")
        if m is None:
            return ("MissingAuthenticationTokenException", "Missing Authentication Token")
        key, date, region, service, signed, signature = m.groups()
        if key != self.access_key_id:
            return ("UnrecognizedClientException", "The security token included in the request is invalid.")
        if self.session_token is not None and request.headers.get("X-Amz-Security-Token") != self.session_token:
            return ("UnrecognizedClientException", "The security token included in the request is invalid.")
        if service != "sagemaker" or region != self.region:
            return ("InvalidSignatureException", f"Credential should be scoped to a valid region and service "
                                                 f"('{self.region}', 'sagemaker'), not ('{region}', '{service}').")
        amz_date = request.headers.get("X-Amz-Date") or ""
        try:
            when = dt.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.timezone.utc)
        except ValueError:
            return ("InvalidSignatureException", "X-Amz-Date is missing or malformed.")
        if abs(when.timestamp() - time.time()) > 300 or not amz_date.startswith(date):
            return ("InvalidSignatureException", "Signature expired: the request time is too far from now.")
        names = signed.split(";")
        if "host" not in names or any(n not in request.headers for n in names):
            return ("InvalidSignatureException", "The request signature does not sign host and its listed headers.")
        canonical = "\n".join([
            request.method, quote(request.path, safe="/~"),
            "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(request.query.items())),
            "".join(f"{n}:{' '.join(request.headers[n].split())}\n" for n in names), signed,
            request.headers.get("X-Amz-Content-SHA256") or hashlib.sha256(request.body).hexdigest()])
        scope = f"{date}/{region}/{service}/aws4_request"
        to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
        k = ("AWS4" + self.secret_access_key).encode()
        for part in (date, region, service, "aws4_request"):
            k = hmac.new(k, part.encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(hmac.new(k, to_sign.encode(), hashlib.sha256).hexdigest(), signature):
            return ("InvalidSignatureException", "The request signature we calculated does not match the signature "
                                                 "you provided. Check your AWS Secret Access Key and signing method. "
                                                 "Consult the service documentation for details.")
        return None

    # ---- containers: validation ---------------------------------------------------------------------------

    def _validate(self, kind: str, body: Any, request: RecordedRequest) -> None:
        if kind == "custom":
            return
        if not isinstance(body, dict):
            raise _ContainerError("the body must be a JSON object")
        if kind in ("tgi", "huggingface"):
            if not isinstance(body.get("inputs"), str) or not body["inputs"]:
                raise _ContainerError("'inputs' must be a non-empty string", 422)
            self._check_params(body, _TGI_PARAMS if kind == "tgi" else _HF_PARAMS)
            if kind == "tgi":
                self._check_tgi_params(body.get("parameters") or {})
        elif kind == "llama":
            if "accept_eula=true" not in (request.headers.get("X-Amzn-SageMaker-Custom-Attributes") or ""):
                raise _ContainerError("Need to pass custom_attributes='accept_eula=true' as part of header. This "
                                      "means you have read and accept the end-user-license-agreement (EULA) of the "
                                      "model.", 400)
            self._check_dialog(body.get("inputs"))
            self._check_params(body, _DIALOG_PARAMS)
        else:
            allowed = {"jurassic": _JURASSIC_KEYS, "cohere": _COHERE_KEYS, "claude": _CLAUDE_KEYS}[kind]
            unknown = sorted(set(body) - allowed)
            if unknown:
                raise _ContainerError(f"unknown field(s) {unknown}", 422)
            if not isinstance(body.get("prompt"), str) or not body["prompt"]:
                raise _ContainerError("'prompt' must be a non-empty string", 422)
            if kind == "claude":
                if not isinstance(body.get("max_tokens_to_sample"), int):
                    raise _ContainerError("max_tokens_to_sample: field required", 422)
                if "\n\nHuman:" not in body["prompt"] or not body["prompt"].endswith("\n\nAssistant:"):
                    raise _ContainerError('prompt must contain "\\n\\nHuman:" turns and end with "\\n\\nAssistant:"')

    @staticmethod
    def _check_params(body: dict[str, Any], allowed: set[str]) -> None:
        params = body.get("parameters", {})
        if not isinstance(params, dict):
            raise _ContainerError("'parameters' must be an object", 422)
        unknown = sorted(set(params) - allowed)
        if unknown:
            raise _ContainerError(f"Failed to deserialize the JSON body: unknown parameter(s) {unknown}", 422)
        extra = sorted(set(body) - {"inputs", "parameters", "stream"})
        if extra:
            raise _ContainerError(f"unknown field(s) {extra}", 422)

    @staticmethod
    def _check_tgi_params(p: dict[str, Any]) -> None:
        if "temperature" in p and not (isinstance(p["temperature"], (int, float)) and p["temperature"] > 0):
            raise _ContainerError("Input validation error: `temperature` must be strictly positive", 422)
        if "top_p" in p and not (isinstance(p["top_p"], (int, float)) and 0 < p["top_p"] < 1):
            raise _ContainerError("Input validation error: `top_p` must be > 0.0 and < 1.0", 422)
        if "top_k" in p and not (isinstance(p["top_k"], int) and p["top_k"] > 0):
            raise _ContainerError("Input validation error: `top_k` must be strictly positive", 422)
        stop = p.get("stop", [])
        if not isinstance(stop, list) or len(stop) > 4 or not all(isinstance(s, str) for s in stop):
            raise _ContainerError("Input validation error: `stop` supports up to 4 stop sequences", 422)
        grammar = p.get("grammar")
        if grammar is not None and (not isinstance(grammar, dict) or grammar.get("type") not in ("json", "regex")):
            raise _ContainerError("Input validation error: grammar must be {type: json|regex, value}", 422)

    @staticmethod
    def _check_dialog(inputs: Any) -> None:
        if not (isinstance(inputs, list) and inputs and all(isinstance(d, list) and d for d in inputs)):
            raise _ContainerError("'inputs' must be a list of dialogs, each a non-empty list of messages")
        for dialog in inputs:
            turns = [m for m in dialog if isinstance(m, dict) and m.get("role") != "system"]
            if dialog[0].get("role") == "system" and len(dialog) < 2:
                raise _ContainerError("a dialog with a system message needs a user message after it")
            roles = [m.get("role") for m in turns]
            if roles[::2] != ["user"] * len(roles[::2]) or roles[1::2] != ["assistant"] * len(roles[1::2]) \
                    or roles[-1] != "user":
                raise _ContainerError("model only supports 'system', 'user' and 'assistant' roles, starting with "
                                      "'system', then 'user' and alternating (u/a/u/a/u...)")

    # ---- containers: answers ---------------------------------------------------------------------------

    def _answer_text(self, kind: str, body: Any, reply: Reply) -> tuple[str, str]:
        if reply.text is not None:
            text = reply.text
        elif kind == "custom":
            text = json.dumps(body)
        elif kind == "llama":
            text = body["inputs"][0][-1].get("content") or ""
        elif kind == "claude":
            text = " " + body["prompt"].rsplit("\n\nHuman:", 1)[-1].rsplit("\n\nAssistant:", 1)[0].strip()
        else:
            text = body.get("inputs") or body.get("prompt") or ""
        params = body.get("parameters") or {} if isinstance(body, dict) else {}
        limit = {"jurassic": "maxTokens", "cohere": "max_tokens", "claude": "max_tokens_to_sample"}.get(kind)
        limit_value = (body.get(limit) if limit else params.get("max_new_tokens")) if isinstance(body, dict) else None
        stops = (body.get("stopSequences") or body.get("stop_sequences") or params.get("stop") or []) \
            if isinstance(body, dict) else []
        for s in stops:  # TGI keeps the stop sequence in its text; the others drop it
            at = text.find(s)
            if at >= 0:
                return text[:at + (len(s) if kind == "tgi" else 0)], reply.finish_reason or "stop_sequence"
        words = stream_pieces(text)
        if isinstance(limit_value, int) and len(words) > limit_value:
            return "".join(words[:limit_value]), reply.finish_reason or "length"
        return text, reply.finish_reason or "eos_token"

    def _answer(self, kind: str, body: Any, text: str, finish: str) -> Any:
        n = count_tokens(text)
        if kind in ("tgi", "huggingface"):
            if kind == "huggingface" and (body.get("parameters") or {}).get("return_full_text", True):
                text = body["inputs"] + text
            out: dict[str, Any] = {"generated_text": text}
            if (body.get("parameters") or {}).get("details"):
                out["details"] = {"finish_reason": finish, "generated_tokens": n, "seed": None}
            return [out]
        if kind == "llama":
            return [{"generation": {"role": "assistant", "content": text}}]
        if kind == "jurassic":
            reason = {"eos_token": "endoftext", "stop_sequence": "stop"}.get(finish, finish)
            return {"id": str(uuid.uuid4()),
                    "prompt": {"text": body["prompt"], "tokens": [{"generatedToken": {"token": w}}
                                                                  for w in stream_pieces(body["prompt"])]},
                    "completions": [{"data": {"text": text, "tokens": [{"generatedToken": {"token": w}}
                                                                       for w in stream_pieces(text)]},
                                     "finishReason": {"reason": reason}}]}
        if kind == "cohere":
            return self._cohere_response(body, text, finish)
        if kind == "claude":
            return {"completion": text, "stop_reason": "max_tokens" if finish == "length" else "stop_sequence"}
        return {"id": str(uuid.uuid4()), "object": "chat.completion",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "received": body}

    @staticmethod
    def _cohere_response(body: dict[str, Any], text: str, finish: str) -> dict[str, Any]:
        reason = "MAX_TOKENS" if finish == "length" else "COMPLETE"
        return {"id": str(uuid.uuid4()), "prompt": body["prompt"],
                "generations": [{"id": str(uuid.uuid4()), "text": text, "finish_reason": reason}],
                "meta": {"api_version": {"version": "1"},
                         "billed_units": {"input_tokens": count_tokens(body["prompt"]), "output_tokens": count_tokens(text)}}}

    def _stream_lines(self, kind: str, body: Any, text: str, finish: str) -> Iterator[bytes]:
        words = stream_pieces(text) or [""]
        if kind == "cohere":
            for w in words:
                yield json.dumps({"text": w, "is_finished": False}).encode() + b"\n"
            yield json.dumps({"is_finished": True, "finish_reason": "MAX_TOKENS" if finish == "length" else "COMPLETE",
                              "response": self._cohere_response(body, text, finish)}).encode() + b"\n"
        elif kind == "custom":
            for w in words:
                yield b"data: " + json.dumps({"choices": [{"index": 0, "delta": {"content": w}}]}).encode() + b"\n\n"
            yield b"data: [DONE]\n\n"
        else:  # TGI server-sent events; the last one carries the whole text and the details
            for i, w in enumerate(words):
                last = i == len(words) - 1
                ev = {"index": i, "token": {"id": i + 1, "text": w, "logprob": -0.1, "special": False},
                      "generated_text": text if last else None,
                      "details": {"finish_reason": finish, "generated_tokens": len(words), "seed": None}
                      if last else None}
                yield b"data:" + json.dumps(ev).encode() + b"\n\n"


if __name__ == "__main__":
    serve_main(SageMakerServer)
