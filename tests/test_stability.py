"""The ``stability`` connection (plain httpx) against the local Stability AI v2beta server: what came back,
and the exact multipart request the server received."""

from __future__ import annotations


import pytest

from langchain_mesh import Mesh
from langchain_mesh.config import load_config
from langchain_mesh.errors import (
    AuthenticationError,
    BadRequestError,
    CapabilityError,
    CredentialError,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeoutError,
    RateLimitError,
    ServerError,
    SettingsError,
)
from langchain_mesh.testing.openai import make_png
from langchain_mesh.testing.stability import StabilityServer, form_of, make_jpeg
from langchain_mesh.testing.wire import free_port


def _config(srv, **conn):
    return {"connections": {"st": {"type": "stability", "api_key": srv.api_key, "base_url": srv.url,
                                   "max_retries": 0, "timeout": 5, **conn}}}


@pytest.fixture
def mesh(stability_server):
    m = Mesh.from_config(_config(stability_server))
    yield m
    m.close()


def _gen(mesh, model="stable-image-core", prompt="a lighthouse at dusk"):
    return mesh.get_llm(f"stability:st:{model}").new_images_generation().with_prompt(prompt)


def test_core_text_to_image(stability_server, mesh):
    q = _gen(mesh).with_negative_prompt("people")
    q.aspect_ratio, q.seed = "21:9", 7
    r = q.execute()
    assert r.model == "stable-image-core" and len(r.images) == 1
    assert r.images[0].mime_type == "image/png" and r.first_image().startswith(b"\x89PNG\r\n\x1a\n")
    req = stability_server.last_request
    assert (req.method, req.path) == ("POST", "/v2beta/stable-image/generate/core")
    assert req.headers["Authorization"] == "Bearer test-key" and req.headers["Accept"] == "image/*"
    assert req.headers["Content-Type"].startswith("multipart/form-data; boundary=")
    assert form_of(req) == ({"prompt": "a lighthouse at dusk", "output_format": "png", "negative_prompt": "people",
                             "aspect_ratio": "21:9", "seed": "7"}, {})


@pytest.mark.parametrize("model", ["sd3-large", "sd3-large-turbo", "sd3.5-large"])
def test_sd3_models_send_their_model_and_jpeg(stability_server, mesh, model):
    q = _gen(mesh, model)
    q.width, q.height = 1344, 768  # within 2% of 16:9
    req_q = q.build_request().model_copy(update={"mime_type": "image/jpeg"})
    r = mesh.connection("st").generate_images(model, req_q)
    assert r.images[0].mime_type == "image/jpeg" and r.first_image()[:3] == b"\xff\xd8\xff"
    assert r.first_image().endswith(b"\xff\xd9")
    req = stability_server.last_request
    assert req.path == "/v2beta/stable-image/generate/sd3"
    assert form_of(req)[0] == {"prompt": "a lighthouse at dusk", "output_format": "jpeg", "model": model,
                               "aspect_ratio": "16:9"}


def test_ultra_image_to_image(stability_server):
    with Mesh.from_config(_config(stability_server, image_strength=0.35)) as mesh:
        png = make_png(64, 96)
        r = _gen(mesh, "stable-image-ultra").with_original_image(png).execute()
    assert r.first_image().startswith(b"\x89PNG")
    fields, files = form_of(stability_server.last_request)
    assert fields == {"prompt": "a lighthouse at dusk", "output_format": "png", "strength": "0.35"}
    assert files == {"image": ("image.png", "image/png", png)}


def test_sd3_image_to_image_sets_the_mode(stability_server, mesh):
    jpeg = make_jpeg(80, 64)
    _gen(mesh, "sd3.5-large").with_original_image(jpeg).execute()
    fields, files = form_of(stability_server.last_request)
    assert fields["mode"] == "image-to-image" and fields["strength"] == "0.5" and "aspect_ratio" not in fields
    assert files["image"] == ("image.jpeg", "image/jpeg", jpeg)


def test_n_images_are_n_requests_with_successive_seeds(stability_server, mesh):
    q = _gen(mesh)
    q.n, q.seed = 3, 100
    r = q.execute()
    assert len(r.images) == 3 and len({i.data for i in r.images}) == 3
    assert [form_of(req)[0]["seed"] for req in stability_server.requests] == ["100", "101", "102"]


async def test_async_requests_run_concurrently(stability_server, mesh):
    q = _gen(mesh)
    q.n = 2
    r = await q.aexecute()
    assert len(r.images) == 2 and len(stability_server.requests) == 2
    assert all("seed" not in form_of(req)[0] for req in stability_server.requests)  # the service picks


def test_refusals_before_any_request(stability_server, mesh):
    q = _gen(mesh)
    q.width, q.height = 1000, 100
    with pytest.raises(SettingsError, match="1000x100 is no aspect ratio it takes") as ei:
        q.execute()
    assert ei.value.settings == ["width", "height"]
    q = _gen(mesh)
    q.aspect_ratio = "5:1"  # 7:3 would be 21:9
    with pytest.raises(SettingsError, match="aspect ratio 5:1 is no aspect ratio it takes"):
        q.execute()
    with pytest.raises(CapabilityError, match="text only"):
        _gen(mesh).with_original_image(make_png(64, 64)).execute()
    q = _gen(mesh, "stable-image-ultra").with_original_image(make_png(64, 64))
    q.aspect_ratio = "1:1"
    with pytest.raises(SettingsError, match="input image's shape") as ei:
        q.execute()
    webp = _gen(mesh, "sd3-large").build_request().model_copy(update={"mime_type": "image/webp"})
    with pytest.raises(SettingsError, match="image/png or image/jpeg"):
        mesh.connection("st").generate_images("sd3-large", webp)
    with pytest.raises(CapabilityError, match="not a Stability image model"):
        mesh.connection("st").generate_images("dall-e-3", webp)
    assert stability_server.requests == []


def test_webp_from_core(stability_server, mesh):
    req = _gen(mesh).build_request().model_copy(update={"mime_type": "image/webp"})
    r = mesh.connection("st").generate_images("stable-image-core", req)
    assert r.images[0].mime_type == "image/webp" and r.first_image()[8:12] == b"WEBP"


def test_content_filtered_is_an_error(stability_server, mesh):
    stability_server.script(finish_reason="CONTENT_FILTERED")
    with pytest.raises(ProviderError, match="CONTENT_FILTERED") as ei:
        _gen(mesh).execute()
    assert ei.value.provider_message == "CONTENT_FILTERED" and not ei.value.retryable


@pytest.mark.parametrize("status, cls", [(400, BadRequestError), (403, AuthenticationError), (413, BadRequestError),
                                         (422, BadRequestError), (429, RateLimitError), (500, ServerError)])
def test_error_statuses(stability_server, mesh, status, cls):
    stability_server.script(status=status, error_message="something is off", headers={"Retry-After": "4"})
    with pytest.raises(cls) as ei:
        _gen(mesh).execute()
    assert ei.value.status == status and ei.value.provider == "stability"
    assert ei.value.provider_message.startswith("something is off (")
    if cls is RateLimitError:
        assert ei.value.retry_after == 4.0
    assert len(stability_server.requests) == 1


def test_server_validation_reaches_the_caller(stability_server, mesh):
    with pytest.raises(BadRequestError, match="at least 64 pixels"):
        _gen(mesh, "stable-image-ultra").with_original_image(make_png(32, 32)).execute()


def test_wrong_key_is_401_and_not_shown(stability_server, monkeypatch):
    monkeypatch.setenv("STABILITY_API_KEY", "sk-wrong-0123456789")
    cfg = _config(stability_server)
    del cfg["connections"]["st"]["api_key"]  # the default: {{env:STABILITY_API_KEY}}
    with Mesh.from_config(cfg) as mesh:
        with pytest.raises(AuthenticationError, match="Incorrect API key") as ei:
            _gen(mesh).execute()
        assert "sk-wrong" not in str(ei.value) and "sk-wrong" not in repr(mesh.connection("st").config)
    assert stability_server.last_request.headers["Authorization"] == "Bearer sk-wrong-0123456789"


def test_missing_key_is_a_credential_error(stability_server, monkeypatch):
    monkeypatch.delenv("STABILITY_API_KEY", raising=False)
    cfg = _config(stability_server)
    del cfg["connections"]["st"]["api_key"]
    with Mesh.from_config(cfg) as mesh, pytest.raises(CredentialError, match="STABILITY_API_KEY"):
        _gen(mesh).execute()


def test_timeout_and_refused_connection():
    with StabilityServer() as srv, Mesh.from_config(_config(srv, timeout=0.5)) as mesh:
        srv.script(delay=1.5)
        with pytest.raises(ProviderTimeoutError):
            _gen(mesh).execute()
    cfg = {"connections": {"st": {"type": "stability", "api_key": "k", "base_url": f"http://127.0.0.1:{free_port()}"}}}
    with Mesh.from_config(cfg) as mesh, pytest.raises(ProviderConnectionError, match="cannot reach stability"):
        _gen(mesh).execute()


def test_models_and_config():
    with Mesh.from_config({"connections": {"st": {"type": "stability", "api_key": "k"}}}) as mesh:
        info = {i.id: i for i in mesh.list_llms()}
        assert mesh.connection("st").config.base_url == "https://api.stability.ai"
    for model in ("stable-image-core", "stable-image-ultra", "sd3-large", "sd3-large-turbo", "sd3.5-large"):
        assert info[f"stability:st:{model}"].purposes == ["IMAGE_GENERATION"]
    with pytest.raises(Exception, match="image_strength"):
        load_config({"connections": {"st": {"type": "stability", "image_strength": 2}}})


def test_chat_is_a_capability_error(mesh):
    with pytest.raises(CapabilityError):
        mesh.connection("st").complete("stable-image-core", None)  # type: ignore[arg-type]
