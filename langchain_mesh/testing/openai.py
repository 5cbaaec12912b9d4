"""A local server speaking the OpenAI wire format, in the flavours of the services that speak it.

Point the real ``openai`` SDK (or any HTTP client) at it to test an app offline: chat completions
(plain, streamed, tool calls, logprobs, ``n`` choices), embeddings (float and base64), image
generation, and image edits and variations (multipart; DALL-E 2's square PNGs, a mask of the image's
size with an alpha channel, gpt-image's several images, dall-e-3's one image a request, each family's
qualities and styles), with each service's paths, auth headers, response extras and error bodies::

    from openai import AzureOpenAI, OpenAI
    from langchain_mesh.testing.openai import OpenAIServer

    with OpenAIServer() as srv:                      # flavor="openai"; also any OpenAI-compatible server
        client = OpenAI(base_url=srv.base_url, api_key="test-key", max_retries=0)
        srv.script(text="Paris")                     # the next request answers "Paris"
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "Capital?"}])
        srv.script(tool_calls=[("get_weather", {"city": "Paris"})])
        srv.script(status=429, error_message="slow down", headers={"retry-after": "1"})
        srv.script(text="a long answer", chunk_delay=0.05, cut_after=3)   # a stream that dies mid-body
        srv.last_request.json["messages"]            # the exact wire request

    with OpenAIServer(flavor="azure", deployments={"my-gpt": "gpt-4o"}) as srv:
        client = AzureOpenAI(azure_endpoint=srv.base_url, api_key="test-key", api_version="2024-10-21")
        client.chat.completions.create(model="my-gpt", messages=[...])   # model = the deployment

``srv.openai_client()`` builds the right SDK client for the flavour. The flavours, with the
``base_url`` a client takes and the auth the server checks:

* ``openai`` (also any OpenAI-compatible server): ``http://host:port/v1``; ``Authorization: Bearer <api_key>``.
* ``azure``: ``http://host:port`` as ``azure_endpoint``; ``/openai/deployments/{deployment}/...?api-version=``
  (and the v1 API ``/openai/v1/...``); ``api-key: <api_key>`` or ``Authorization: Bearer <entra_token>``.
* ``azure_serverless`` (Azure AI / Azure ML serverless endpoints): ``http://host:port``, the target URI,
  serving ``/v1/chat/completions`` and ``/chat/completions`` (embeddings alike); Bearer or ``api-key``.
* ``databricks``: ``http://host:port/serving-endpoints`` (``model`` = the endpoint name), plus the native
  ``/serving-endpoints/{name}/invocations``; Bearer ``api_key`` (a PAT) or the OAuth M2M token that
  ``POST /oidc/v1/token`` (client credentials) hands out.
* ``mistral``: ``http://host:port/v1``; Bearer key; Mistral's strict schema (``random_seed``, 422 errors).

With nothing scripted, a chat completion echoes the text of the last user message (a JSON instance of
the schema under ``response_format``, a call to the forced tool under ``tool_choice``). Token counts
come from a simple regex tokenizer (words and punctuation); embeddings are normalised hashed
bag-of-words vectors (same text, same vector). Every request the service would take on (right path,
key, deployment or endpoint) consumes the next script, and a scripted error answers before the body
is validated. From another process::

    python -m langchain_mesh.testing.openai --port 8099 --flavor azure
    curl -X POST localhost:8099/__mesh__/script -d '{"text": "hi"}'

Stdlib only, like :mod:`langchain_mesh.testing.wire`.
"""

from __future__ import annotations

import argparse
import base64
import hmac
import json
import math
import re
import struct
import threading
import time
import uuid
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Iterator, Optional
from urllib.parse import parse_qs

from .fakes import (alternative_tokens, count_tokens, embed_text, make_png, sample_from_schema, split_tokens,
                    to_float32, token_logprob)
from .wire import RecordedRequest, Reply, Responder, WireServer, serve_main, sse_json

__all__ = ["FLAVORS", "OpenAIServer", "count_tokens", "embed_text", "make_png", "split_tokens"]

FLAVORS = ("openai", "azure", "azure_serverless", "databricks", "mistral")

DEFAULT_DEPLOYMENTS = {
    "gpt-4o-dep": "gpt-4o",
    "gpt-4o-mini-dep": "gpt-4o-mini",
    "text-embedding-3-small-dep": "text-embedding-3-small",
    "text-embedding-ada-002-dep": "text-embedding-ada-002",
    "dall-e-3-dep": "dall-e-3",
}
DEFAULT_ENDPOINTS = [
    "databricks-meta-llama-3-3-70b-instruct",
    "databricks-claude-sonnet-4",
    "databricks-gte-large-en",
    "databricks-bge-large-en",
]
DEFAULT_MODELS = {
    "openai": ["gpt-4o", "gpt-4o-mini", "text-embedding-3-small", "text-embedding-3-large",
               "text-embedding-ada-002", "dall-e-3", "gpt-image-1"],
    "mistral": ["mistral-large-latest", "mistral-small-latest", "codestral-latest", "mistral-embed"],
    "azure_serverless": ["Meta-Llama-3.1-8B-Instruct"],
}

_FINGERPRINT = "fp_mesh0test"
_IMAGE_PATH = "/files/images/"
_AZURE_KEY_401 = ("Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a "
                  "valid key for an active subscription and use a correct regional API endpoint for your resource.")
_ENTRA_401 = ("Unauthorized. Access token is missing, invalid, audience is incorrect "
              "(https://cognitiveservices.azure.com), or have expired.")
_DEPLOYMENT_404 = ("The API deployment for this resource does not exist. If you created the deployment within "
                   "the last 5 minutes, please wait a moment and try again.")
_BAD_JSON = ("We could not parse the JSON body of your request. (HINT: This likely means you aren't using your "
             "HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)")
_OPENAI_ROLES = ("system", "assistant", "user", "function", "tool", "developer")
_MISTRAL_ROLES = ("assistant", "system", "tool", "user")
_MISTRAL_TOOL_CHOICES = ("auto", "none", "any", "required")
# Parameters Mistral's strict request schema rejects (it takes random_seed, not seed).
_MISTRAL_FORBIDDEN = ("seed", "logprobs", "top_logprobs")


# ---- tokens, vectors, images: deterministic stand-ins for the model (shared: fakes.py) -----------------

_PIECE = re.compile(r"\s*\S+")  # one streamed chunk: a word with its punctuation


def token_logprobs(tokens: list[str], top: int) -> list[dict[str, Any]]:
    """OpenAI's ``logprobs.content``: each token with its logprob, bytes and ``top`` alternatives."""
    out = []
    for tok in tokens:
        lp = token_logprob(tok)
        tops = [{"token": alt, "logprob": round(lp - (1.0 * i + 0.25 if i else 0.0), 4), "bytes": list(alt.encode())}
                for i, alt in enumerate(alternative_tokens(tok, top))]
        out.append({"token": tok, "logprob": lp, "bytes": list(tok.encode()), "top_logprobs": tops})
    return out


def _new_id(prefix: str = "", length: int = 24) -> str:
    return prefix + uuid.uuid4().hex[:length]


def _alnum_id(length: int) -> str:
    """Mistral's tool call ids: 9 letters and digits."""
    digits = int(uuid.uuid4().hex, 16)
    chars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    out = ""
    for _ in range(length):
        digits, r = divmod(digits, len(chars))
        out += chars[r]
    return out


# ---- what differs between the flavours' success bodies ---------------------------------------------------


@dataclass(frozen=True)
class _Traits:
    fingerprint: bool  # system_fingerprint on chat bodies and chunks
    openai_extras: bool  # message.refusal, usage *_details
    content_filters: bool  # Azure's prompt_filter_results / content_filter_results
    whole_tool_calls: bool  # a stream carries each tool call complete in one delta (Mistral) instead of fragments
    usage_on_finish_chunk: bool  # a stream always reports usage on its finish chunk (Mistral)
    images: bool  # /images/generations exists
    id_prefix: str


_TRAITS = {
    "openai": _Traits(True, True, False, False, False, True, "chatcmpl-"),
    "azure": _Traits(True, True, True, False, False, True, "chatcmpl-"),
    "azure_serverless": _Traits(False, False, False, False, False, False, "chatcmpl-"),
    "databricks": _Traits(False, False, False, False, False, False, "chatcmpl-"),
    "mistral": _Traits(False, False, False, True, True, False, ""),
}


# ---- rejections: raised while handling, turned into the flavour's error body ----------------------------


class _Fail(Exception):
    """Answer this status and (already flavour-shaped) body instead of a result."""

    def __init__(self, status: int, body: Any):
        super().__init__(status)
        self.status, self.body = status, body


class _Invalid(Exception):
    """A request the real service rejects as invalid. ``message``/``param``/``code`` make OpenAI's 400
    body; ``detail`` is the pydantic entry Mistral answers (422) for the same mistake."""

    def __init__(self, message: str, param: Optional[str] = None, code: Optional[str] = None,
                 detail: Optional[dict[str, Any]] = None):
        super().__init__(message)
        self.message, self.param, self.code, self.detail = message, param, code, detail


def _loc(param: str) -> list[Any]:
    """``messages[0].role`` -> ``["body", "messages", 0, "role"]`` (pydantic's error location)."""
    parts: list[Any] = ["body"]
    for name, index in re.findall(r"([^.\[\]]+)|\[(\d+)\]", param):
        parts.append(int(index) if index else name)
    return parts


def _openai_list(values: tuple[str, ...] | list[str]) -> str:
    quoted = [f"'{v}'" for v in values]
    return " and ".join(quoted) if len(quoted) < 3 else ", ".join(quoted[:-1]) + ", and " + quoted[-1]


def _pydantic_list(values: tuple[str, ...] | list[str]) -> str:
    quoted = [f"'{v}'" for v in values]
    return " or ".join(quoted) if len(quoted) < 3 else ", ".join(quoted[:-1]) + " or " + quoted[-1]


def _missing(param: str, body: Any = None) -> _Invalid:
    return _Invalid(f"Missing required parameter: '{param}'.", param, "missing_required_parameter",
                    {"type": "missing", "loc": _loc(param), "msg": "Field required", "input": body})


def _bad_value(param: str, value: Any, allowed: tuple[str, ...]) -> _Invalid:
    return _Invalid(f"Invalid value: '{value}'. Supported values are: {_openai_list(allowed)}.", param,
                    "invalid_value",
                    {"type": "literal_error", "loc": _loc(param), "msg": f"Input should be {_pydantic_list(allowed)}",
                     "input": value, "ctx": {"expected": _pydantic_list(allowed)}})


def _extra_forbidden(param: str, value: Any) -> _Invalid:
    return _Invalid(f"Unrecognized request argument supplied: {param}", param, None,
                    {"type": "extra_forbidden", "loc": _loc(param), "msg": "Extra inputs are not permitted",
                     "input": value})


def _check_int(body: dict[str, Any], name: str, lo: int, hi: Optional[int] = None) -> None:
    value = body.get(name)
    if value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool):
        raise _Invalid(f"Invalid type for '{name}': expected an integer, but got {type(value).__name__} instead.",
                       name, "invalid_type",
                       {"type": "int_type", "loc": _loc(name), "msg": "Input should be a valid integer", "input": value})
    if value < lo:
        raise _Invalid(f"Invalid '{name}': integer below minimum value. Expected a value >= {lo}, but got {value} "
                       "instead.", name, "integer_below_min_value",
                       {"type": "greater_than_equal", "loc": _loc(name),
                        "msg": f"Input should be greater than or equal to {lo}", "input": value, "ctx": {"ge": lo}})
    if hi is not None and value > hi:
        raise _Invalid(f"Invalid '{name}': integer above maximum value. Expected a value <= {hi}, but got {value} "
                       "instead.", name, "integer_above_max_value",
                       {"type": "less_than_equal", "loc": _loc(name),
                        "msg": f"Input should be less than or equal to {hi}", "input": value, "ctx": {"le": hi}})


# Defaults for a scripted error that names only its status: (message, OpenAI type, code).
_STATUS_DEFAULTS: dict[int, tuple[str, str, Optional[str]]] = {
    400: ("Bad request.", "invalid_request_error", None),
    401: ("Incorrect API key provided.", "invalid_request_error", "invalid_api_key"),
    403: ("You are not allowed to perform this request.", "permission_error", None),
    404: ("The requested resource does not exist.", "invalid_request_error", None),
    408: ("Request timed out.", "timeout", None),
    409: ("Conflict.", "invalid_request_error", None),
    422: ("Unprocessable entity.", "invalid_request_error", None),
    429: ("Rate limit reached for requests. Please try again later.", "requests", "rate_limit_exceeded"),
    500: ("The server had an error while processing your request. Sorry about that!", "server_error", None),
    502: ("Bad gateway.", "server_error", None),
    503: ("The engine is currently overloaded, please try again later.", "server_error", None),
    504: ("Gateway timeout.", "server_error", None),
}
_DATABRICKS_CODES = {400: "BAD_REQUEST", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
                     404: "RESOURCE_DOES_NOT_EXIST", 429: "REQUEST_LIMIT_EXCEEDED", 500: "INTERNAL_ERROR",
                     503: "TEMPORARILY_UNAVAILABLE"}
_MISTRAL_TYPES = {429: ("rate_limited", "1300"), 500: ("internal_server_error", None),
                  503: ("service_unavailable", None)}


# ---- a planned completion --------------------------------------------------------------------------------


@dataclass
class _Choice:
    text: Optional[str]  # None: no content (tool calls only)
    tool_calls: list[tuple[str, str, str]] = field(default_factory=list)  # (id, name, arguments JSON text)
    finish_reason: str = "stop"

    def completion_tokens(self) -> int:
        return count_tokens(self.text or "") + sum(count_tokens(n) + count_tokens(a) for _, n, a in self.tool_calls)


_OPS = {"chat/completions": "chat", "embeddings": "embeddings", "images/generations": "images",
        "images/edits": "image_edits", "images/variations": "image_variations"}
_IMAGE_OPS = ("images", "image_edits", "image_variations")


@dataclass
class _Route:
    op: str  # chat | embeddings | images | models | model | invocations | info
    target: Optional[str] = None  # Azure deployment, Databricks endpoint or model id named by the path
    needs_api_version: bool = False


class OpenAIServer(WireServer):
    """OpenAI's wire format on a local port, in one of :data:`FLAVORS` (see the module docstring)."""

    provider = "openai"

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, flavor: str = "openai",
                 api_key: str = "test-key", entra_token: str = "test-entra-token",
                 deployments: Optional[dict[str, str]] = None,
                 endpoints: Optional[list[str] | dict[str, str]] = None,
                 embedding_dimensions: int = 64, max_embedding_inputs: int = 2048,
                 models: Optional[list[str]] = None, oauth_token: str = "test-oauth-token",
                 oauth_clients: Optional[dict[str, str]] = None, **options: Any):
        if flavor not in FLAVORS:
            raise ValueError(f"unknown flavor {flavor!r}; expected one of {', '.join(FLAVORS)}")
        super().__init__(host, port, **options)
        self.flavor = flavor
        self.provider = f"openai ({flavor})" if flavor != "openai" else "openai"
        self.traits = _TRAITS[flavor]
        self.api_key = api_key
        self.entra_token = entra_token
        self.deployments = dict(DEFAULT_DEPLOYMENTS if deployments is None else deployments)
        # Databricks endpoints: a list of names, or {name: model it serves} to report that model in bodies
        eps = DEFAULT_ENDPOINTS if endpoints is None else endpoints
        self.endpoints = dict(eps) if isinstance(eps, dict) else {name: name for name in eps}
        self.embedding_dimensions = embedding_dimensions
        self.max_embedding_inputs = max_embedding_inputs
        self.models = list(models if models is not None else DEFAULT_MODELS.get(flavor, DEFAULT_MODELS["openai"]))
        # Databricks OAuth M2M: /oidc/v1/token hands out oauth_token for client credentials (any client
        # when oauth_clients, {client_id: secret}, is None); the token then works as a Bearer token
        self.oauth_token = oauth_token
        self.oauth_clients = oauth_clients
        self._images: dict[str, bytes] = {}
        self._images_lock = threading.Lock()

    def __repr__(self) -> str:  # never the key
        return f"OpenAIServer(flavor={self.flavor!r}, url={self.url!r})"

    # ---- what clients point at ---------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """The SDK's ``base_url`` (``azure_endpoint`` for azure; the target URI for azure_serverless)."""
        return self.url + {"openai": "/v1", "mistral": "/v1", "databricks": "/serving-endpoints"}.get(self.flavor, "")

    def client_kwargs(self, api_version: str = "2024-10-21") -> dict[str, Any]:
        """Keyword arguments for ``openai.OpenAI`` (``openai.AzureOpenAI`` for azure) to reach this server."""
        if self.flavor == "azure":
            return {"azure_endpoint": self.base_url, "api_key": self.api_key, "api_version": api_version}
        return {"base_url": self.base_url, "api_key": self.api_key}

    def openai_client(self, **overrides: Any) -> Any:
        """An ``openai`` SDK client for this server (``max_retries=0`` unless overridden)."""
        import openai  # the SDK is optional: only this helper needs it

        cls = openai.AzureOpenAI if self.flavor == "azure" else openai.OpenAI
        return cls(**{"max_retries": 0, **self.client_kwargs(), **overrides})

    def reset(self) -> None:
        super().reset()
        with self._images_lock:
            self._images.clear()

    # ---- command line ------------------------------------------------------------------------------

    @classmethod
    def add_cli_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--flavor", choices=FLAVORS, default="openai", help="which service to imitate")
        parser.add_argument("--api-key", default="test-key", help="the key clients must send")
        parser.add_argument("--entra-token", default="test-entra-token", help="azure: the accepted Entra token")
        parser.add_argument("--embedding-dimensions", type=int, default=64, help="default vector length")
        parser.add_argument("--max-embedding-inputs", type=int, default=2048, help="inputs per embeddings call")

    @classmethod
    def cli_options(cls, args: argparse.Namespace) -> dict[str, Any]:
        return {"flavor": args.flavor, "api_key": args.api_key, "entra_token": args.entra_token,
                "embedding_dimensions": args.embedding_dimensions, "max_embedding_inputs": args.max_embedding_inputs}

    def banner(self) -> str:
        key = "'test-key'" if self.api_key == "test-key" else "the one given with --api-key"
        return (f"OpenAI-format test server, flavor {self.flavor}: base_url {self.base_url} (API key: {key}). "
                f"Script it: POST {self.url}/__mesh__/script; inspect: GET {self.url}/__mesh__/requests")

    # ---- dispatch ------------------------------------------------------------------------------------

    def handle(self, request: RecordedRequest, respond: Responder) -> None:
        if request.method == "GET" and request.path.startswith(_IMAGE_PATH):
            self._serve_image(request, respond)
            return
        if self.flavor == "databricks" and request.path.startswith("/oidc/"):
            self._oidc(request, respond)
            return
        try:
            route = self._route(request)
            if route is None:
                raise _Fail(404, self._not_found_body(request))
            if route.needs_api_version and not request.query.get("api-version"):
                # Azure answers a missing api-version as an unknown resource, not as a bad request
                raise _Fail(404, {"error": {"code": "404", "message": "Resource not found"}})
            self._check_auth(request)
            body = self._parse_body(request) if request.method == "POST" else {}
            model = self._resolve_model(route, body)
            reply = self.next_reply()
            if reply is not None and reply.delay:
                time.sleep(reply.delay)
            if reply is not None and (reply.status != 200 or reply.json_body is not None):
                self._answer_scripted(reply, respond)
                return
            getattr(self, "_op_" + route.op)(body, route, model, reply, respond)
        except _Fail as f:
            respond.json(f.status, f.body, self._headers())
        except _Invalid as inv:
            status, body = self._invalid_body(inv)
            respond.json(status, body, self._headers())

    def _route(self, req: RecordedRequest) -> Optional[_Route]:
        """What the path asks for (None: the flavour's 404)."""
        return getattr(self, f"_route_{self.flavor}")(req.method, req.path.rstrip("/"))

    def _route_openai(self, method: str, path: str) -> Optional[_Route]:
        m = re.fullmatch(r"/v1/(chat/completions|embeddings|images/generations|images/edits|images/variations)", path)
        if m and method == "POST" and (_OPS[m[1]] not in _IMAGE_OPS or self.traits.images):
            return _Route(_OPS[m[1]])
        if path == "/v1/models" and method == "GET":
            return _Route("models")
        m = re.fullmatch(r"/v1/models/(.+)", path)
        return _Route("model", m[1]) if m and method == "GET" else None

    _route_mistral = _route_openai

    def _route_azure(self, method: str, path: str) -> Optional[_Route]:
        # Azure serves image edits, not variations
        m = re.fullmatch(r"/openai/deployments/([^/]+)/(chat/completions|embeddings|images/generations|images/edits)",
                         path)
        if m and method == "POST":
            return _Route(_OPS[m[2]], m[1], needs_api_version=True)
        m = re.fullmatch(r"/openai/v1/(chat/completions|embeddings|images/generations)", path)
        return _Route(_OPS[m[1]]) if m and method == "POST" else None  # the v1 API: deployment in "model"

    def _route_azure_serverless(self, method: str, path: str) -> Optional[_Route]:
        # the target URI serves the OpenAI paths with and without /v1 (and the model-inference /models/...)
        m = re.fullmatch(r"(?:/v1|/models)?/(chat/completions|embeddings)", path)
        if m and method == "POST":
            return _Route(_OPS[m[1]])
        return _Route("info") if path in ("/info", "/models/info") and method == "GET" else None

    def _route_databricks(self, method: str, path: str) -> Optional[_Route]:
        m = re.fullmatch(r"/serving-endpoints/(chat/completions|embeddings)", path)
        if m and method == "POST":
            return _Route(_OPS[m[1]])
        m = re.fullmatch(r"/serving-endpoints/([^/]+)/invocations", path)
        return _Route("invocations", m[1]) if m and method == "POST" else None

    # ---- auth ------------------------------------------------------------------------------------------

    def _check_auth(self, req: RecordedRequest) -> None:
        auth = req.headers.get("authorization") or ""
        bearer = auth[7:].strip() if auth[:7].lower() == "bearer " else None
        key = req.headers.get("api-key")
        if self.flavor == "azure":
            ok = _same(key, self.api_key) or _same(bearer, self.entra_token)
        elif self.flavor == "azure_serverless":
            ok = _same(bearer, self.api_key) or _same(key, self.api_key)
        elif self.flavor == "databricks":
            ok = _same(bearer, self.api_key) or _same(bearer, self.oauth_token)
        else:
            ok = _same(bearer, self.api_key)
        if not ok:
            raise _Fail(401, self._auth_error_body(bearer, key))

    def _auth_error_body(self, bearer: Optional[str], key: Optional[str]) -> Any:
        """The real 401 bodies; none of them repeats the key that was sent."""
        if self.flavor == "azure":
            return {"error": {"code": "401", "message": _ENTRA_401 if bearer is not None and key is None
                              else _AZURE_KEY_401}}
        if self.flavor == "azure_serverless":
            return {"statusCode": 401, "message": _ENTRA_401}
        if self.flavor == "databricks":
            if bearer is None:
                return {"error_code": 401, "message": "Credential was not sent or was of an unsupported type for "
                                                      f"this API. [ReqId: {_new_id()}]"}
            return {"error_code": 401, "message": f"Invalid access token. [ReqId: {_new_id()}]"}
        if self.flavor == "mistral":
            return {"message": "Unauthorized", "request_id": _new_id(length=32)}
        if bearer is None:
            msg = ("You didn't provide an API key. You need to provide your API key in an Authorization header "
                   "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY). You can obtain an API key from "
                   "https://platform.openai.com/account/api-keys.")
            return {"error": {"message": msg, "type": "invalid_request_error", "param": None, "code": None}}
        return {"error": {"message": "Incorrect API key provided: ********. You can find your API key at "
                                     "https://platform.openai.com/account/api-keys.",
                          "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}}

    # ---- error bodies ------------------------------------------------------------------------------

    def _headers(self, extra: Optional[dict[str, str]] = None) -> dict[str, str]:
        rid = _new_id("req_", 32)
        headers = {"x-request-id": rid}
        if self.flavor == "azure":
            headers["apim-request-id"] = str(uuid.uuid4())
        return {**headers, **(extra or {})}

    def error_body(self, status: int, message: Optional[str] = None, type_: Optional[str] = None,
                   code: Optional[str] = None, param: Optional[str] = None) -> Any:
        """The flavour's error body for ``status`` (what a scripted ``Reply(status=...)`` answers)."""
        d_msg, d_type, d_code = _STATUS_DEFAULTS.get(status, ("Request failed.", "invalid_request_error", None))
        message = message or d_msg
        if self.flavor == "azure":  # APIM's shape; the OpenAI fields only where the script names them
            err: dict[str, Any] = {"code": code or str(status), "message": message}
            err.update({k: v for k, v in (("type", type_), ("param", param)) if v is not None})
            return {"error": err}
        if self.flavor == "azure_serverless":
            return {"error": {"code": code or _reason(status), "message": message, "status": status}}
        if self.flavor == "databricks":
            return {"error_code": code or _DATABRICKS_CODES.get(status, "INTERNAL_ERROR" if status >= 500
                                                              else "BAD_REQUEST"), "message": message}
        if self.flavor == "mistral":
            m_type, m_code = _MISTRAL_TYPES.get(status, ("invalid_request_error", None))
            return {"object": "error", "message": message, "type": type_ or m_type, "param": param,
                    "code": code or m_code}
        return {"error": {"message": message, "type": type_ or d_type, "param": param,
                          "code": code if code is not None else d_code}}

    def _invalid_body(self, inv: _Invalid) -> tuple[int, Any]:
        if self.flavor == "mistral" and inv.detail is not None:
            # Mistral's API validates with pydantic: 422 and the detail list inside its error envelope
            return 422, {"object": "error", "message": {"detail": [inv.detail]}, "type": "invalid_request_error",
                         "param": None, "code": None}
        if self.flavor == "databricks":
            return 400, {"error_code": "BAD_REQUEST", "message": inv.message}
        if self.flavor == "azure_serverless":
            return 400, {"error": {"code": "Bad Request", "message": inv.message, "status": 400}}
        if self.flavor == "mistral":
            return 400, self.error_body(400, inv.message, "invalid_request_error", inv.code, inv.param)
        return 400, {"error": {"message": inv.message, "type": "invalid_request_error", "param": inv.param,
                               "code": inv.code}}

    def _not_found_body(self, req: RecordedRequest) -> Any:
        if self.flavor == "azure":
            return {"error": {"code": "404", "message": "Resource not found"}}
        if self.flavor == "azure_serverless":
            return {"error": {"code": "NotFound", "message": "Resource not found", "status": 404}}
        if self.flavor == "databricks":
            return {"error_code": "ENDPOINT_NOT_FOUND", "message": f"No API found for '{req.method} {req.path}'"}
        if self.flavor == "mistral":
            return {"detail": "Not Found"}
        return {"error": {"message": f"Invalid URL ({req.method} {req.path})", "type": "invalid_request_error",
                          "param": None, "code": None}}

    def not_found(self, request: RecordedRequest, respond: Responder) -> None:
        respond.json(404, self._not_found_body(request), self._headers())

    def _answer_scripted(self, reply: Reply, respond: Responder) -> None:
        body = reply.json_body if reply.json_body is not None else self.error_body(
            reply.status, reply.error_message, reply.error_type, reply.error_code)
        respond.json(reply.status, body, self._headers(reply.headers))

    # ---- request body, target model ------------------------------------------------------------

    def _parse_body(self, req: RecordedRequest) -> dict[str, Any]:
        if (req.headers.get("content-type") or "").startswith("multipart/form-data"):
            return _form_body(req)
        try:
            body = json.loads(req.body or b"{}")
        except ValueError as e:
            raise _Invalid(_BAD_JSON, detail={"type": "json_invalid", "loc": ["body", 0], "msg": "JSON decode error",
                                              "input": {}, "ctx": {"error": str(e)}}) from None
        if not isinstance(body, dict):
            raise _Invalid(_BAD_JSON, detail={"type": "model_attributes_type", "loc": ["body"],
                                              "msg": "Input should be a valid dictionary or object", "input": body})
        return body

    def _resolve_model(self, route: _Route, body: dict[str, Any]) -> str:
        """The model name the answer reports; 404 for an unknown Azure deployment or Databricks endpoint."""
        if route.op in ("models", "model", "info"):
            return route.target or ""
        if self.flavor == "azure":
            deployment = route.target or body.get("model")
            if deployment is None:
                raise _Invalid("you must provide a model parameter")
            if deployment not in self.deployments:
                raise _Fail(404, {"error": {"code": "DeploymentNotFound", "message": _DEPLOYMENT_404}})
            return self.deployments[deployment]
        if self.flavor == "databricks":
            endpoint = route.target or body.get("model")
            if endpoint is None:
                raise _Invalid("you must provide a model parameter")
            if endpoint not in self.endpoints:
                raise _Fail(404, {"error_code": "RESOURCE_DOES_NOT_EXIST",
                                  "message": f"Endpoint with name '{endpoint}' does not exist."})
            return self.endpoints[endpoint]
        if self.flavor == "azure_serverless":  # one model behind the endpoint; "model" is optional
            return body.get("model") or (self.models[0] if self.models else "model")
        if route.op in _IMAGE_OPS:  # OpenAI's images API defaults the model
            return body.get("model") or "dall-e-2"
        if not body.get("model"):
            raise _Invalid("you must provide a model parameter",
                           detail={"type": "missing", "loc": ["body", "model"], "msg": "Field required", "input": body})
        return body["model"]

    # ---- chat completions --------------------------------------------------------------------------

    def _op_chat(self, body: dict[str, Any], route: _Route, model: str, reply: Optional[Reply],
                 respond: Responder) -> None:
        self._validate_chat(body)
        choices = self._plan_choices(body, reply)
        prompt_tokens = _prompt_tokens(body["messages"])
        usage = self._usage(prompt_tokens, sum(c.completion_tokens() for c in choices), reply)
        cid = _new_id(self.traits.id_prefix, 29 if self.traits.id_prefix else 32)
        created = int(time.time())
        logprobs = (body.get("top_logprobs") or 0) if body.get("logprobs") else None
        headers = self._headers(reply.headers if reply else None)
        if body.get("stream"):
            events = self._chat_events(cid, created, model, choices, usage, body, logprobs)
            respond.sse(sse_json(events), headers=headers, chunk_delay=reply.chunk_delay if reply else 0.0,
                        cut_after=reply.cut_after if reply else None)
        else:
            respond.json(200, self._chat_body(cid, created, model, choices, usage, logprobs), headers)

    def _validate_chat(self, body: dict[str, Any]) -> None:
        if self.flavor == "mistral":
            for name in _MISTRAL_FORBIDDEN:
                if name in body:
                    raise _extra_forbidden(name, body[name])
        messages = body.get("messages")
        if messages is None:
            raise _missing("messages", body)
        if not isinstance(messages, list) or not messages:
            raise _Invalid("Invalid 'messages': empty array. Expected an array with minimum length 1, but got an "
                           "empty array instead.", "messages", "empty_array",
                           {"type": "too_short", "loc": ["body", "messages"],
                            "msg": "List should have at least 1 item after validation, not 0", "input": messages,
                            "ctx": {"field_type": "List", "min_length": 1, "actual_length": 0}})
        for i, msg in enumerate(messages):
            self._validate_message(i, msg)
        self._validate_tools(body)
        self._validate_response_format(body)
        if body.get("stream_options") is not None and not body.get("stream"):
            raise _Invalid("The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                           "stream_options")
        _check_int(body, "n", 1, 128)
        _check_int(body, "max_tokens", 1)
        _check_int(body, "max_completion_tokens", 1)
        _check_int(body, "top_logprobs", 0, 20)
        stop = body.get("stop")
        if isinstance(stop, list) and len(stop) > 4:
            raise _Invalid(f"Invalid 'stop': array too long. Expected an array with maximum length 4, but got an "
                           f"array with length {len(stop)} instead.", "stop", "array_above_max_length")

    def _validate_message(self, i: int, msg: Any) -> None:
        if not isinstance(msg, dict) or "role" not in msg:
            raise _missing(f"messages[{i}].role", msg)
        role = msg["role"]
        if self.flavor == "mistral" and role not in _MISTRAL_ROLES:
            expected = ", ".join(f"'{r}'" for r in _MISTRAL_ROLES)
            raise _Invalid(f"Invalid role {role!r}", f"messages[{i}].role", "invalid_value",
                           {"type": "union_tag_invalid", "loc": ["body", "messages", i],
                            "msg": f"Input tag '{role}' found using 'role' does not match any of the expected "
                                   f"tags: {expected}", "input": msg,
                            "ctx": {"discriminator": "'role'", "tag": str(role), "expected_tags": expected}})
        if self.flavor != "mistral" and role not in _OPENAI_ROLES:
            raise _bad_value(f"messages[{i}].role", role, _OPENAI_ROLES)
        content = msg.get("content")
        if role != "user" and isinstance(content, list) and any(
                isinstance(p, dict) and p.get("type") == "image_url" for p in content):
            # Chat Completions takes images in user turns only
            raise _Invalid(f"Invalid 'messages[{i}]'. Image URLs are only allowed for messages with role 'user', "
                           f"but this message with role '{role}' contains an image URL.", f"messages[{i}]")

    def _validate_tools(self, body: dict[str, Any]) -> None:
        tools = body.get("tools") or []
        for i, tool in enumerate(tools):
            fn = tool.get("function") if isinstance(tool, dict) else None
            if not isinstance(fn, dict):
                raise _missing(f"tools[{i}].function", tool)
            if not fn.get("name"):
                raise _missing(f"tools[{i}].function.name", fn)
        choice = body.get("tool_choice")
        if choice is None:
            return
        if isinstance(choice, dict):
            name = (choice.get("function") or {}).get("name")
            if not name:
                raise _missing("tool_choice.function.name", choice)
        elif self.flavor == "mistral":
            if choice not in _MISTRAL_TOOL_CHOICES:
                raise _bad_value("tool_choice", choice, _MISTRAL_TOOL_CHOICES)
        elif choice not in ("none", "auto", "required"):
            raise _bad_value("tool_choice", choice, ("none", "auto", "required"))
        if not tools and self.flavor != "mistral":
            raise _Invalid("Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are "
                           "specified.", "tool_choice")

    def _validate_response_format(self, body: dict[str, Any]) -> None:
        rf = body.get("response_format")
        if rf is None:
            return
        kind = rf.get("type") if isinstance(rf, dict) else None
        if kind not in ("text", "json_object", "json_schema"):
            raise _bad_value("response_format.type", kind, ("text", "json_object", "json_schema"))
        if kind == "json_schema":
            js = rf.get("json_schema")
            if not isinstance(js, dict):
                raise _missing("response_format.json_schema", rf)
            for name in ("name", "schema"):
                if name not in js:
                    raise _missing(f"response_format.json_schema.{name}", js)
        if kind == "json_object" and self.traits.openai_extras:
            texts = " ".join(_content_text(m.get("content")) for m in body["messages"])
            if "json" not in texts.lower():
                raise _Invalid("'messages' must contain the word 'json' in some form, to use 'response_format' of "
                               "type 'json_object'.", "messages")

    def _plan_choices(self, body: dict[str, Any], reply: Optional[Reply]) -> list[_Choice]:
        n = body.get("n") or 1
        text, calls = self._planned_output(body, reply)
        text, cut_reason = _apply_limits(text, body)
        choices = []
        for _ in range(n):
            ids = [self._tool_call_id() for _ in calls]
            tool_calls = [(cid, name, args) for cid, (name, args) in zip(ids, calls)]
            reason = (reply.finish_reason if reply and reply.finish_reason else
                      cut_reason or ("tool_calls" if tool_calls else "stop"))
            choices.append(_Choice(text, tool_calls, reason))
        return choices

    def _planned_output(self, body: dict[str, Any], reply: Optional[Reply]) -> tuple[Optional[str], list]:
        """(text, [(tool name, arguments JSON)]) from the script, or what the unscripted server answers."""
        if reply is not None and (reply.text is not None or reply.tool_calls):
            calls = [(name, reply.arguments_text(i)) for i, (name, _) in enumerate(reply.tool_calls)]
            return reply.text, calls
        echo = _last_user_text(body["messages"])
        forced = _forced_tool(body)
        if forced is not None:
            return None, [(forced["name"], json.dumps(sample_from_schema(forced.get("parameters") or {}, echo)))]
        rf = body.get("response_format") or {}
        if rf.get("type") == "json_schema":
            return json.dumps(sample_from_schema(rf["json_schema"]["schema"], echo)), []
        if rf.get("type") == "json_object":
            return json.dumps({"text": echo}), []
        return echo, []

    def _tool_call_id(self) -> str:
        return _alnum_id(9) if self.flavor == "mistral" else _new_id("call_", 24)

    def _usage(self, prompt: int, completion: int, reply: Optional[Reply]) -> dict[str, Any]:
        """Counted usage, with ``Reply.usage`` overriding any key (flat ``cached_tokens`` and
        ``reasoning_tokens`` go into the OpenAI detail objects)."""
        override = dict(reply.usage) if reply is not None and reply.usage else {}
        cached, reasoning = override.pop("cached_tokens", 0), override.pop("reasoning_tokens", 0)
        usage: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": completion}
        usage.update(override)
        usage.setdefault("total_tokens", usage["prompt_tokens"] + usage["completion_tokens"])
        if self.traits.openai_extras:
            usage.setdefault("prompt_tokens_details", {"cached_tokens": cached, "audio_tokens": 0})
            usage.setdefault("completion_tokens_details", {"reasoning_tokens": reasoning, "audio_tokens": 0,
                                                           "accepted_prediction_tokens": 0,
                                                           "rejected_prediction_tokens": 0})
        return usage

    def _message(self, choice: _Choice) -> dict[str, Any]:
        content = choice.text
        if content is None and self.flavor == "mistral":
            content = ""  # Mistral sends an empty string beside tool calls, OpenAI null
        msg: dict[str, Any] = {"role": "assistant", "content": content}
        if self.traits.openai_extras:
            msg["refusal"] = None
            msg["annotations"] = []
        if choice.tool_calls:
            msg["tool_calls"] = [{"id": cid, "type": "function", "function": {"name": name, "arguments": args}}
                                 for cid, name, args in choice.tool_calls]
        elif self.flavor == "mistral":
            msg["tool_calls"] = None
        return msg

    def _chat_body(self, cid: str, created: int, model: str, choices: list[_Choice], usage: dict[str, Any],
                   logprobs: Optional[int]) -> dict[str, Any]:
        out_choices = []
        for i, c in enumerate(choices):
            lp = ({"content": token_logprobs(split_tokens(c.text or ""), logprobs), "refusal": None}
                  if logprobs is not None else None)
            choice = {"index": i, "message": self._message(c), "logprobs": lp, "finish_reason": c.finish_reason}
            if self.traits.content_filters:
                choice["content_filter_results"] = _azure_filters(c.finish_reason == "content_filter", output=True)
            out_choices.append(choice)
        body: dict[str, Any] = {"id": cid, "object": "chat.completion", "created": created, "model": model,
                                "choices": out_choices, "usage": usage}
        if self.traits.fingerprint:
            body["system_fingerprint"] = _FINGERPRINT
        if self.flavor == "openai":
            body["service_tier"] = "default"
        if self.traits.content_filters:
            body["prompt_filter_results"] = [{"prompt_index": 0, "content_filter_results": _azure_filters(False)}]
        return body

    # ---- streaming -----------------------------------------------------------------------------------

    def _chat_events(self, cid: str, created: int, model: str, choices: list[_Choice], usage: dict[str, Any],
                     body: dict[str, Any], logprobs: Optional[int]) -> Iterator[Any]:
        """The SSE ``data`` payloads of a streamed completion, ``[DONE]`` last."""
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        with_usage_null = include_usage and not self.traits.usage_on_finish_chunk

        def chunk(chunk_choices: list[dict[str, Any]]) -> dict[str, Any]:
            d: dict[str, Any] = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model}
            if self.traits.fingerprint:
                d["system_fingerprint"] = _FINGERPRINT
            d["choices"] = chunk_choices
            if with_usage_null:
                d["usage"] = None  # OpenAI: every chunk but the last carries a null usage under include_usage
            return d

        if self.traits.content_filters:
            # Azure's first event reports the prompt's filter results before any choice exists
            yield {"choices": [], "created": 0, "id": "", "model": "", "object": "",
                   "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": _azure_filters(False)}]}
        for i, c in enumerate(choices):
            for delta, lp, filters in self._choice_deltas(c, logprobs):
                yield chunk([self._delta_choice(i, delta, lp, None, filters)])
            filtered = True if c.finish_reason == "content_filter" else None
            finish = self._delta_choice(i, {"content": ""} if self.flavor == "mistral" else {}, None,
                                        c.finish_reason, filtered)
            last = chunk([finish])
            if self.traits.usage_on_finish_chunk and i == len(choices) - 1:
                last["usage"] = usage
            yield last
        if with_usage_null:
            final = chunk([])
            final["usage"] = usage
            yield final
        yield "[DONE]"

    def _choice_deltas(self, c: _Choice, logprobs: Optional[int]) -> Iterator[tuple[dict, Optional[dict], Any]]:
        """(delta, logprobs, filters) for one choice: role, text in word chunks, then tool calls."""
        first: dict[str, Any] = {"role": "assistant", "content": ""}
        if self.traits.openai_extras:
            first["refusal"] = None
        yield first, None, None
        for piece in _pieces(c.text or ""):
            lp = ({"content": token_logprobs(split_tokens(piece), logprobs), "refusal": None}
                  if logprobs is not None else None)
            yield {"content": piece}, lp, False
        if not c.tool_calls:
            return
        if self.traits.whole_tool_calls:
            yield {"tool_calls": [{"id": cid, "type": "function", "function": {"name": name, "arguments": args},
                                   "index": k} for k, (cid, name, args) in enumerate(c.tool_calls)]}, None, None
            return
        for k, (cid, name, args) in enumerate(c.tool_calls):
            # OpenAI: a first delta names the call with empty arguments; the arguments follow in fragments
            yield {"tool_calls": [{"index": k, "id": cid, "type": "function",
                                   "function": {"name": name, "arguments": ""}}]}, None, None
            for frag in _fragments(args):
                yield {"tool_calls": [{"index": k, "function": {"arguments": frag}}]}, None, None

    def _delta_choice(self, index: int, delta: dict[str, Any], lp: Optional[dict], finish: Optional[str],
                      filters: Any) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": index, "delta": delta}
        if self.flavor != "mistral":
            choice["logprobs"] = lp
        choice["finish_reason"] = finish
        if self.traits.content_filters:
            # the category results on text chunks (and on a filtered finish), {} elsewhere, as Azure's
            # default filter reports them
            choice["content_filter_results"] = {} if filters is None else _azure_filters(bool(filters), output=True)
        return choice

    # ---- embeddings ----------------------------------------------------------------------------------

    def _op_embeddings(self, body: dict[str, Any], route: _Route, model: str, reply: Optional[Reply],
                       respond: Responder) -> None:
        texts = self._embedding_inputs(body)
        dims = self._embedding_dimensions(body, model)
        encoding = body.get("encoding_format") or "float"
        if encoding not in ("float", "base64"):
            raise _bad_value("encoding_format", encoding, ("float", "base64"))
        vectors = (reply.embeddings if reply is not None and reply.embeddings is not None
                   else [embed_text(t, dims) for t in texts])
        data = [{"object": "embedding", "index": i, "embedding": _encode_vector(v, encoding)}
                for i, v in enumerate(vectors)]
        tokens = sum(count_tokens(t) for t in texts)
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        if self.flavor == "mistral":
            usage["completion_tokens"] = 0
        if reply is not None and reply.usage:
            usage.update(reply.usage)
        out: dict[str, Any] = {"object": "list", "data": data, "model": model, "usage": usage}
        if self.flavor == "mistral":
            out = {"id": _new_id(length=32), **out}
        respond.json(200, out, self._headers(reply.headers if reply else None))

    def _embedding_inputs(self, body: dict[str, Any]) -> list[str]:
        raw = body.get("input")
        if raw is None:
            raise _missing("input", body)
        if isinstance(raw, str):
            texts = [raw]
        elif isinstance(raw, list) and raw and all(isinstance(x, int) for x in raw):
            texts = [" ".join(map(str, raw))]  # one input given as token ids
        elif isinstance(raw, list):
            texts = [x if isinstance(x, str) else " ".join(map(str, x)) for x in raw]
        else:
            texts = []
        if not texts or any(t == "" for t in texts):
            raise _Invalid("'$.input' is invalid. Please check the API reference: "
                           "https://platform.openai.com/docs/api-reference.")
        if len(texts) > self.max_embedding_inputs:
            raise _Invalid(self._too_many_inputs_message(len(texts)), "input")
        return texts

    def _too_many_inputs_message(self, count: int) -> str:
        limit = self.max_embedding_inputs
        if self.flavor == "azure":
            return f"Too many inputs. The max number of inputs is {limit}. We hope to increase the number of inputs " \
                   "per request soon. Please contact us through an Azure support request at: " \
                   "https://go.microsoft.com/fwlink/?linkid=2213926 for further questions."
        if self.flavor == "mistral":
            return f"Too many inputs in request: {count} > {limit}. Split the inputs into smaller batches."
        return f"'$.input' is invalid: array length must be {limit} or less, got {count}."

    def _embedding_dimensions(self, body: dict[str, Any], model: str) -> int:
        if self.flavor == "mistral":
            if "dimensions" in body:
                raise _extra_forbidden("dimensions", body["dimensions"])
            name = "output_dimension"
        else:
            name = "dimensions"
        if body.get(name) is None:
            return self.embedding_dimensions
        if self.flavor in ("openai", "azure") and not model.startswith("text-embedding-3"):
            raise _Invalid("This model does not support specifying dimensions.")
        _check_int(body, name, 1)
        return body[name]

    # ---- images --------------------------------------------------------------------------------------

    def _op_images(self, body: dict[str, Any], route: _Route, model: str, reply: Optional[Reply],
                   respond: Responder) -> None:
        prompt = body.get("prompt")
        if not prompt:
            raise _missing("prompt", body)
        if "_files" in body:
            raise _Invalid("/images/generations takes JSON, not a multipart form; image inputs go to /images/edits")
        width, height = self._check_image_params(body, model, ("model", "prompt", "n", "size", "response_format",
                                                                "quality", "style", "output_format", "user",
                                                                "background", "moderation", "output_compression"))
        self._answer_images(body, model, width, height, prompt, reply, respond)

    def _op_image_edits(self, body: dict[str, Any], route: _Route, model: str, reply: Optional[Reply],
                        respond: Responder) -> None:
        """``POST /images/edits`` (multipart): dall-e-2 one square PNG with a mask or transparency;
        gpt-image models one or several images (``image[]``), a mask optional."""
        files = body.get("_files")
        if files is None:
            raise _Invalid("/images/edits takes a multipart/form-data body (image, mask, prompt...)")
        prompt = body.get("prompt")
        if not prompt:
            raise _missing("prompt", body)
        family = _image_family(model)
        if family == "dall-e-3":
            raise _Invalid(f"Invalid value: '{model}'. Value must be 'dall-e-2' or 'gpt-image-1'.", "model")
        images = files.get("image[]") or files.get("image") or []
        if not images:
            raise _missing("image", body)
        if len(images) > 1 and family != "gpt-image":
            raise _Invalid(f"{model} takes one image; several are for gpt-image models.", "image")
        sizes = [self._check_upload(img, "image", square=family != "gpt-image") for img in images]
        masks = files.get("mask") or []
        if masks:
            mask_size = self._check_upload(masks[0], "mask", square=False)
            if mask_size != sizes[0]:
                raise _Invalid(f"Invalid mask: the mask ({mask_size[0]}x{mask_size[1]}) and the image "
                               f"({sizes[0][0]}x{sizes[0][1]}) must have the same dimensions.", "mask")
            if not _has_alpha(masks[0][2]):
                raise _Invalid("Invalid mask: the mask must be a PNG with an alpha channel (transparent areas "
                               "are edited).", "mask")
        elif family == "dall-e-2" and not _has_alpha(images[0][2]):
            raise _Invalid("Invalid input image: without a mask, the image must have transparency, which is "
                           "used as the mask.", "image")
        width, height = self._check_image_params(body, model, ("model", "prompt", "n", "size", "response_format",
                                                                "quality", "output_format", "user", "background",
                                                                "input_fidelity", "_files"))
        if "size" not in body:
            width, height = sizes[0]
        self._answer_images(body, model, width, height, prompt, reply, respond)

    def _op_image_variations(self, body: dict[str, Any], route: _Route, model: str, reply: Optional[Reply],
                             respond: Responder) -> None:
        """``POST /images/variations`` (multipart, dall-e-2 only): one square PNG, no prompt."""
        files = body.get("_files")
        if files is None:
            raise _Invalid("/images/variations takes a multipart/form-data body (image, n, size...)")
        if _image_family(model) != "dall-e-2":
            raise _Invalid(f"Invalid value: '{model}'. Value must be 'dall-e-2'.", "model")
        if "prompt" in body:
            raise _extra_forbidden("prompt", body["prompt"])
        images = files.get("image") or []
        if len(images) != 1:
            raise _missing("image", body)
        size = self._check_upload(images[0], "image", square=True)
        width, height = self._check_image_params(body, model, ("model", "n", "size", "response_format", "user",
                                                                "_files"))
        if "size" not in body:
            width, height = size
        self._answer_images(body, model, width, height, "variation", reply, respond)

    @staticmethod
    def _check_upload(upload: tuple[str, str, bytes], name: str, square: bool) -> tuple[int, int]:
        data = upload[2]
        if not data.startswith(b"\x89PNG\r\n\x1a\n") and name == "mask":
            raise _Invalid(f"Invalid {name}: it must be a PNG.", name)
        if len(data) > 4 * 1024 * 1024:
            raise _Invalid(f"Invalid {name}: it must be less than 4 MB.", name)
        size = _upload_size(data)
        if size is None:
            raise _Invalid(f"Invalid {name}: the file is not a PNG, JPEG or WebP image.", name)
        if square and size[0] != size[1]:
            raise _Invalid(f"Invalid {name}: it must be square, got {size[0]}x{size[1]}.", name)
        return size

    def _check_image_params(self, body: dict[str, Any], model: str, allowed: tuple[str, ...]) -> tuple[int, int]:
        for key in body:
            if key not in allowed:
                raise _Invalid(f"Unrecognized request argument supplied: {key}", key, code="unknown_parameter")
        _check_int(body, "n", 1, 10)
        family = _image_family(model)
        if family == "dall-e-3" and body.get("n", 1) != 1:
            raise _Invalid("Invalid 'n': dall-e-3 only supports n=1.", "n")
        size = body.get("size") or "1024x1024"
        m = re.fullmatch(r"(\d{1,4})x(\d{1,4})", str(size))
        if not m or not (0 < int(m[1]) <= 4096 and 0 < int(m[2]) <= 4096):
            raise _bad_value("size", size, ("256x256", "512x512", "1024x1024", "1792x1024", "1024x1792"))
        fmt = body.get("response_format")
        if fmt is not None and fmt not in ("url", "b64_json"):
            raise _bad_value("response_format", fmt, ("url", "b64_json"))
        if family == "gpt-image" and fmt is not None:
            raise _Invalid("Unknown parameter: 'response_format'.", "response_format", code="unknown_parameter")
        if family != "gpt-image" and body.get("output_format") is not None:
            raise _Invalid("Unknown parameter: 'output_format'.", "output_format", code="unknown_parameter")
        if body.get("output_format") is not None and body["output_format"] not in ("png", "jpeg", "webp"):
            raise _bad_value("output_format", body["output_format"], ("png", "jpeg", "webp"))
        qualities = {"dall-e-2": ("standard",), "dall-e-3": ("standard", "hd"),
                     "gpt-image": ("low", "medium", "high", "auto")}.get(family or "")
        if body.get("quality") is not None and qualities is not None and body["quality"] not in qualities:
            raise _bad_value("quality", body["quality"], qualities)
        if body.get("style") is not None:
            if family not in (None, "dall-e-3"):
                raise _Invalid("Unknown parameter: 'style' is only supported for dall-e-3.", "style")
            if body["style"] not in ("vivid", "natural"):
                raise _bad_value("style", body["style"], ("vivid", "natural"))
        return int(m[1]), int(m[2])

    def _answer_images(self, body: dict[str, Any], model: str, width: int, height: int, prompt: str,
                       reply: Optional[Reply], respond: Responder) -> None:
        from .stability import make_image

        mime = {"jpeg": "image/jpeg", "webp": "image/webp"}.get(body.get("output_format") or "", "image/png")
        image = make_image(mime, width, height, prompt)
        # gpt-image models always answer base64; dall-e models a URL unless asked otherwise
        fmt = body.get("response_format") or ("b64_json" if _image_family(model) == "gpt-image" else "url")
        revised = reply.text if reply is not None and reply.text is not None else prompt
        data = [self._image_item(image, fmt, revised) for _ in range(body.get("n") or 1)]
        respond.json(200, {"created": int(time.time()), "data": data}, self._headers(reply.headers if reply else None))

    def _image_item(self, png: bytes, fmt: str, revised_prompt: str) -> dict[str, Any]:
        if fmt == "b64_json":
            item: dict[str, Any] = {"b64_json": base64.b64encode(png).decode()}
        else:
            image_id = _new_id("img-", 24)
            with self._images_lock:
                self._images[image_id] = png
            item = {"url": f"{self.url}{_IMAGE_PATH}{image_id}.png"}
        item["revised_prompt"] = revised_prompt
        if self.traits.content_filters:
            item["content_filter_results"] = _azure_filters(False, output=True)
            item["prompt_filter_results"] = _azure_filters(False)
        return item

    def _serve_image(self, req: RecordedRequest, respond: Responder) -> None:
        """The URL of a ``response_format="url"`` image (no auth, like the signed URLs OpenAI returns)."""
        image_id = req.path[len(_IMAGE_PATH):].removesuffix(".png")
        with self._images_lock:
            png = self._images.get(image_id)
        if png is None:
            respond.bytes(404, b"<Error><Code>BlobNotFound</Code></Error>", "application/xml")
        else:
            respond.bytes(200, png, "image/png")

    # ---- Databricks OAuth machine-to-machine -------------------------------------------------------

    def _oidc(self, req: RecordedRequest, respond: Responder) -> None:
        """The workspace's OAuth endpoints: discovery and the client-credentials token."""
        if req.method == "GET" and req.path == "/oidc/.well-known/oauth-authorization-server":
            respond.json(200, {"issuer": f"{self.url}/oidc", "token_endpoint": f"{self.url}/oidc/v1/token",
                               "authorization_endpoint": f"{self.url}/oidc/v1/authorize",
                               "grant_types_supported": ["client_credentials", "authorization_code"]})
        elif req.method == "POST" and req.path == "/oidc/v1/token":
            status, body = self._oauth_token_answer(req)
            respond.json(status, body, {"Cache-Control": "no-store"})
        else:
            respond.json(404, self._not_found_body(req))

    def _oauth_token_answer(self, req: RecordedRequest) -> tuple[int, dict[str, Any]]:
        form = {k: v[-1] for k, v in parse_qs(req.body.decode("utf-8", "replace")).items()}
        client_id, secret = form.get("client_id"), form.get("client_secret")
        auth = req.headers.get("authorization") or ""
        if auth[:6].lower() == "basic ":  # client_secret_basic, what the Databricks SDKs send
            try:
                client_id, _, secret = base64.b64decode(auth[6:].strip()).decode().partition(":")
            except ValueError:
                client_id = secret = None
        if form.get("grant_type") != "client_credentials":
            return 400, {"error": "unsupported_grant_type",
                         "error_description": "Only the client_credentials grant is supported here."}
        known = self.oauth_clients is None or (
            client_id in self.oauth_clients and _same(secret, self.oauth_clients[client_id]))
        if not client_id or secret is None or not known:
            return 401, {"error": "invalid_client", "error_description": "Client authentication failed"}
        return 200, {"access_token": self.oauth_token, "token_type": "Bearer", "expires_in": 3600,
                     "scope": form.get("scope") or "all-apis"}

    # ---- models, info, Databricks invocations ------------------------------------------------------

    def _model_object(self, model_id: str) -> dict[str, Any]:
        if self.flavor == "mistral":
            return {"id": model_id, "object": "model", "created": 1700000000, "owned_by": "mistralai",
                    "name": model_id, "description": f"{model_id} (test server)", "max_context_length": 32768,
                    "aliases": [], "deprecation": None, "type": "base",
                    "capabilities": {"completion_chat": "embed" not in model_id, "function_calling": True,
                                     "completion_fim": model_id.startswith("codestral"), "fine_tuning": False,
                                     "vision": False, "classification": False}}
        return {"id": model_id, "object": "model", "created": 1700000000,
                "owned_by": "openai" if self.flavor == "openai" else "system"}

    def _op_models(self, body: dict[str, Any], route: _Route, model: str, reply: Optional[Reply],
                   respond: Responder) -> None:
        respond.json(200, {"object": "list", "data": [self._model_object(m) for m in self.models]}, self._headers())

    def _op_model(self, body: dict[str, Any], route: _Route, model: str, reply: Optional[Reply],
                  respond: Responder) -> None:
        if model not in self.models:
            raise _Fail(404, self.error_body(404, f"The model '{model}' does not exist or you do not have access to "
                                                  "it.", "invalid_request_error", "model_not_found", "model"))
        respond.json(200, self._model_object(model), self._headers())

    def _op_info(self, body: dict[str, Any], route: _Route, model: str, reply: Optional[Reply],
                 respond: Responder) -> None:
        name = self.models[0] if self.models else "model"
        respond.json(200, {"model_name": name, "model_type": "chat-completion", "model_provider_name": "Test"},
                     self._headers())

    def _op_invocations(self, body: dict[str, Any], route: _Route, model: str, reply: Optional[Reply],
                        respond: Responder) -> None:
        """Databricks' native scoring path: chat and embeddings bodies, or model-serving ``predictions``."""
        if "messages" in body:
            self._op_chat(body, route, model, reply, respond)
        elif "input" in body:
            self._op_embeddings(body, route, model, reply, respond)
        else:
            rows = _invocation_rows(body)
            if rows is None:
                raise _Invalid("Invalid input. Expected one of: 'messages', 'input', 'dataframe_split', "
                               "'dataframe_records', 'instances', 'inputs'.")
            text = reply.text if reply is not None and reply.text is not None else None
            predictions = [text if text is not None else row for row in rows]
            respond.json(200, {"predictions": predictions}, self._headers(reply.headers if reply else None))


# ---- helpers of the handlers ----------------------------------------------------------------------------


def _same(given: Optional[str], expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _content_text(content: Any) -> str:
    """A message's text: the string, or its text parts joined by spaces (multimodal content)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def _prompt_tokens(messages: list[dict[str, Any]]) -> int:
    total = 0
    for m in messages:
        total += count_tokens(_content_text(m.get("content")))
        if isinstance(m.get("content"), list):  # an image costs what a low-detail image costs at OpenAI
            total += 85 * sum(1 for p in m["content"] if isinstance(p, dict) and p.get("type") == "image_url")
        for tc in m.get("tool_calls") or []:
            fn = tc.get("function") or {}
            total += count_tokens(fn.get("name") or "") + count_tokens(fn.get("arguments") or "")
    return total


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for m in reversed(messages):
        if m.get("role") == "user":
            return _content_text(m.get("content"))
    return ""


def _forced_tool(body: dict[str, Any]) -> Optional[dict[str, Any]]:
    """The function an unscripted answer must call: ``tool_choice`` required/any or a named function."""
    tools = [t["function"] for t in body.get("tools") or []]
    choice = body.get("tool_choice")
    if not tools or choice in (None, "auto", "none"):
        return None
    if isinstance(choice, dict):
        name = choice["function"]["name"]
        return next((t for t in tools if t["name"] == name), {"name": name})
    return tools[0]


def _apply_limits(text: Optional[str], body: dict[str, Any]) -> tuple[Optional[str], Optional[str]]:
    """Cut at the first stop string (never included), then at max_tokens; the finish reason if cut."""
    if text is None:
        return None, None
    reason = None
    stops = body.get("stop")
    stops = [stops] if isinstance(stops, str) else [s for s in stops or [] if s]
    cuts = [text.find(s) for s in stops if s in text]
    if cuts:
        text, reason = text[:min(cuts)], "stop"
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    tokens = split_tokens(text)
    if limit and len(tokens) > limit:
        text, reason = "".join(tokens[:limit]), "length"
    return text, reason


def _pieces(text: str) -> list[str]:
    """The streamed content chunks: one word (with the whitespace before it) each."""
    pieces = _PIECE.findall(text)
    rest = text[len("".join(pieces)):]
    if rest and pieces:  # trailing whitespace rides on the last chunk
        pieces[-1] += rest
    elif rest:
        pieces.append(rest)
    return pieces


def _fragments(args: str) -> list[str]:
    """Arguments JSON in at least two fragments (three for longer text), as OpenAI streams them."""
    if len(args) < 2:
        return [args] if args else []
    size = max(1, math.ceil(len(args) / 3))
    return [args[i:i + size] for i in range(0, len(args), size)]


def _encode_vector(vector: list[float], encoding: str) -> Any:
    if encoding == "base64":  # little-endian float32, as the SDK decodes it
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return [to_float32(v) for v in vector]


def _azure_filters(filtered: bool, output: bool = False) -> dict[str, Any]:
    """Azure's content filter results; ``filtered`` marks the hate category (a scripted content_filter)."""
    safe = {"filtered": False, "severity": "safe"}
    out: dict[str, Any] = {"hate": {"filtered": True, "severity": "high"} if filtered else dict(safe),
                           "self_harm": dict(safe), "sexual": dict(safe), "violence": dict(safe)}
    if output:
        out["protected_material_code"] = {"filtered": False, "detected": False}
        out["protected_material_text"] = {"filtered": False, "detected": False}
    else:
        out["jailbreak"] = {"filtered": False, "detected": False}
    return out


def _invocation_rows(body: dict[str, Any]) -> Optional[list[Any]]:
    if "dataframe_split" in body:
        return list((body["dataframe_split"] or {}).get("data") or [])
    for key in ("dataframe_records", "instances", "inputs"):
        if key in body:
            value = body[key]
            return value if isinstance(value, list) else [value]
    return None


if __name__ == "__main__":
    serve_main(OpenAIServer)


# ---- images: multipart bodies and uploads ----------------------------------------------------------


def _form_body(req: RecordedRequest) -> dict[str, Any]:
    """A multipart body as the JSON body's dict (numbers read back) plus ``_files``: name -> uploads."""
    import email.parser
    import email.policy

    ctype = req.headers.get("content-type") or ""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + req.body)
    if not message.is_multipart() or message.defects:
        raise _Invalid("The multipart/form-data body could not be parsed.")
    body: dict[str, Any] = {}
    files: dict[str, list[tuple[str, str, bytes]]] = {}
    for part in message.iter_parts():
        name = str(part.get_param("name", header="content-disposition") or "")
        payload = part.get_payload(decode=True) or b""
        if part.get_filename() is not None:
            files.setdefault(name, []).append((part.get_filename(), part.get_content_type(), payload))
        else:
            text = payload.decode()
            body[name] = int(text) if name == "n" and text.isdigit() else text
    body["_files"] = files
    return body


def _image_family(model: str) -> Optional[str]:
    if model.startswith("gpt-image"):
        return "gpt-image"
    if model.startswith("dall-e-3"):
        return "dall-e-3"
    if model.startswith("dall-e-2"):
        return "dall-e-2"
    return None


def _upload_size(data: bytes) -> Optional[tuple[int, int]]:
    if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 24:
        w, h = struct.unpack(">II", data[16:24])
        return int(w), int(h)
    if data.startswith(b"\xff\xd8"):  # walk the JPEG segments to the frame header
        i = 2
        while i + 9 < len(data) and data[i] == 0xFF:
            marker, length = data[i + 1], struct.unpack(">H", data[i + 2:i + 4])[0]
            if marker in (0xC0, 0xC1, 0xC2):
                h, w = struct.unpack(">HH", data[i + 5:i + 9])
                return int(w), int(h)
            i += 2 + length
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return 1, 1
    return None


def _has_alpha(data: bytes) -> bool:
    """A PNG with an alpha channel (colour type 4 or 6) or a tRNS chunk."""
    if not data.startswith(b"\x89PNG\r\n\x1a\n") or len(data) < 26:
        return False
    return data[25] in (4, 6) or b"tRNS" in data[:4096]
