"""The OpenAPI 3.1 document of the server, generated from the request models (``GET /openapi.json``)."""

from __future__ import annotations

from typing import Any

from pydantic.json_schema import models_json_schema

from .. import __version__
from .models import (ChatCompletionRequest, CompletionsRequest, EmbeddingsRequest, ImageEditForm, ImagesRequest,
                     ImageVariationForm)

__all__ = ["openapi_document"]

_ERROR = {"type": "object", "required": ["error"], "properties": {"error": {
    "type": "object", "required": ["message", "type"],
    "properties": {"message": {"type": "string"}, "type": {"type": "string"},
                   "param": {"type": ["string", "null"]}, "code": {"type": ["string", "null"]}}}}}

_POSTS = {
    "/v1/chat/completions": (ChatCompletionRequest, "createChatCompletion",
                             "A chat completion from a mesh LLM (SSE with stream: true)"),
    "/v1/completions": (CompletionsRequest, "createCompletion",
                        "A legacy text completion from a mesh LLM (the prompt as one user message)"),
    "/v1/embeddings": (EmbeddingsRequest, "createEmbedding", "Embeddings from a mesh embedding LLM"),
    "/v1/images/generations": (ImagesRequest, "createImage", "Images from a mesh image-generation LLM"),
}

#: multipart/form-data endpoints: the form's text fields and its files
_FORMS = {
    "/v1/images/edits": (ImageEditForm, ("image", "mask"), "createImageEdit",
                         "An edited image: inpainting with a mask (or the image's transparency), "
                         "else a prompted variation"),
    "/v1/images/variations": (ImageVariationForm, ("image",), "createImageVariation",
                              "An unprompted variation of an image"),
}


def _responses(ok: str) -> dict[str, Any]:
    err = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    out: dict[str, Any] = {"200": {"description": ok, "content": {"application/json": {"schema": {"type": "object"}}}}}
    for status, why in (("400", "invalid request (param names the field)"), ("401", "missing or wrong API key"),
                        ("404", "unknown model"), ("429", "rate limited upstream (Retry-After)"),
                        ("502", "the provider failed"), ("504", "the provider timed out")):
        out[status] = {"description": why, **err}
    return out


def openapi_document() -> dict[str, Any]:
    models = [(m, "validation") for m, _, _ in _POSTS.values()] + [(m, "validation") for m, *_ in _FORMS.values()]
    refs, schemas = models_json_schema(models, ref_template="#/components/schemas/{model}")
    components = {**schemas.get("$defs", {}), "Error": _ERROR}
    paths: dict[str, Any] = {
        "/health": {"get": {"operationId": "health", "summary": "liveness", "security": [],
                            "responses": {"200": {"description": "the server is up"}}}},
        "/v1/models": {"get": {"operationId": "listModels", "summary": "the mesh LLM ids this key may use",
                               "responses": _responses("a list of model objects")}},
    }
    # each caller's own credentials (langchain_mesh/server/credentials.py); values go in, never out
    target = {"name": "target", "in": "path", "required": True, "schema": {"type": "string"},
              "description": "a connection or preset taking per-user credentials"}
    values = {"type": "object", "additionalProperties": {"type": "string", "minLength": 1}, "minProperties": 1}
    paths["/v1/credentials"] = {"get": {"operationId": "listCredentials",
                                        "summary": "the caller's stored credentials (fields, no values) and the targets",
                                        "responses": _responses("a list of credential objects")}}
    paths["/v1/credentials/{target}"] = {
        "put": {"operationId": "setCredential", "summary": "store the caller's own credential for a target",
                "parameters": [target],
                "requestBody": {"required": True, "content": {"application/json": {"schema": values}}},
                "responses": _responses("the credential object (fields, no values)")},
        "delete": {"operationId": "deleteCredential", "summary": "delete the caller's credential for a target",
                   "parameters": [target], "responses": _responses("deleted")}}
    for path, (model, op, summary) in _POSTS.items():
        paths[path] = {"post": {
            "operationId": op, "summary": summary,
            "requestBody": {"required": True, "content": {"application/json": {"schema": refs[(model, "validation")]}}},
            "responses": _responses(summary)}}
    for path, (model, file_fields, op, summary) in _FORMS.items():
        schema = {"allOf": [refs[(model, "validation")], {"type": "object", "required": ["image"], "properties": {
            f: {"type": "string", "format": "binary"} for f in file_fields}}]}
        paths[path] = {"post": {
            "operationId": op, "summary": summary,
            "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}},
            "responses": _responses(summary)}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "langchain-mesh OpenAI-compatible API", "version": __version__},
        "paths": paths,
        "components": {"schemas": components,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}],
    }
