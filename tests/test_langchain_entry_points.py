"""``langchain_mesh.init_chat_model`` / ``MeshChatModel.from_id`` (what agents should be given instead
of a mesh id string), and the mesh error types where LangChain's retry and fallback helpers look."""

from __future__ import annotations

import pytest

pytest.importorskip("langchain_core")

from langchain_mesh import MeshChatModel, init_chat_model  # noqa: E402
from langchain_mesh.errors import (  # noqa: E402
    RETRYABLE_ERRORS,
    AuthenticationError,
    BadRequestError,
    CapabilityError,
    RateLimitError,
    ServerError,
    SettingsError,
    UnknownLLMError,
)

MESH = {"connections": {"fake": {"type": "scripted"}, "backup": {"type": "scripted"}}}


def test_init_chat_model_builds_a_mesh_chat_model_checked_now():
    model = init_chat_model("scripted:fake:chat", mesh=MESH, temperature=0, max_tokens=20)
    assert isinstance(model, MeshChatModel) and (model.model, model.temperature, model.max_tokens) == (
        "scripted:fake:chat", 0, 20)
    assert model.invoke("ping").content == "ping"
    assert init_chat_model("mesh:scripted:fake:chat", mesh=MESH).model == "scripted:fake:chat"
    assert MeshChatModel.from_id("scripted:fake:chat", mesh=MESH, temperature=0.5).temperature == 0.5


@pytest.mark.parametrize("kwargs,error,words", [
    ({"model": "openai:o:gpt-4o"}, UnknownLLMError, "scripted:fake"),          # lists what there is
    ({"model": "scripted:fake:embed"}, CapabilityError, "GENERIC_COMPLETION"),
    ({"model": "scripted:fake:chat", "model_provider": "openai"}, SettingsError, "model_provider"),
    ({"model": "scripted:fake:chat", "temprature": 0}, SettingsError, "temprature"),
])
def test_init_chat_model_refuses_clearly(kwargs, error, words):
    with pytest.raises(error, match=words):
        init_chat_model(mesh=MESH, **kwargs)


def test_with_retry_retries_only_what_a_retry_can_fix():
    model = init_chat_model("scripted:fake:chat", mesh=MESH)
    conn = model.mesh.connection("fake")
    retrying = model.with_retry(wait_exponential_jitter=False, stop_after_attempt=3)
    assert retrying.retry_exception_types == RETRYABLE_ERRORS == model.retryable_errors
    conn.script(error=RateLimitError("slow down", status=429)).script(error=ServerError("oops", status=503))
    conn.script(text="third time")
    assert retrying.invoke("x").content == "third time"
    before = len(conn.requests)
    conn.script(error=AuthenticationError("bad key", status=401)).script(text="never reached")
    with pytest.raises(AuthenticationError):
        retrying.invoke("x")
    assert len(conn.requests) == before + 1
    # an explicit choice still wins
    assert model.with_retry(retry_if_exception_type=(BadRequestError,)).retry_exception_types == (BadRequestError,)


def test_fallbacks_on_the_mesh_error_types():
    main = init_chat_model("scripted:fake:chat", mesh=MESH)
    backup = MeshChatModel(model="scripted:backup:chat", mesh=main.mesh)
    main.mesh.connection("fake").script(error=RateLimitError("slow down", status=429))
    chain = main.with_fallbacks([backup], exceptions_to_handle=main.retryable_errors)
    assert chain.invoke("from the backup").content == "from the backup"
    main.mesh.connection("fake").script(error=BadRequestError("bad", status=400))
    with pytest.raises(BadRequestError):  # not an outage: no fallback
        chain.invoke("x")
