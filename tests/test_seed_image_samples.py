"""Every image-generation sample of ``seeds/llm-mesh-api.md`` ("Image generation using the LLM Mesh"),
run as written against the local provider servers, for each provider that offers the feature, with
the wire request checked and the images decoded with Pillow. (The other seeds,
``custom-llm-connection.rst``, ``external-models-gateway.txt`` and ``llm-connections.rst``, have no image
code sample: their image mentions are screenshots and model lists.)

Adapted, and only these (each sample's code is otherwise the seed's, line for line):

* ``import dataiku`` / ``dataiku.api_client().get_default_project()``: the project is our ``Mesh``;
  :class:`_Dataiku` hands it out under the seed's names, and ``dataiku.Folder`` is :class:`Folder`, a
  directory with the two methods the samples call (``get_writer``, ``get_download_stream``).
* ``IMAGE_GENERATION_MODEL_ID = ""`` ("Fill with your image generation model id") is filled by the test.
* ``from IPython.display import Image, display`` (IPython is no dependency of ours): ``display(Image(x))``
  is Pillow opening the bytes, which is what a notebook would have to do to show them.

The seed's parameter sample asks for quality "hd" *and* style "anime" *and* fidelity: no model takes all
three, so it runs on connections configured ``image_settings: lenient`` and the test checks what each
model sent and what it reports in ``ignored_settings``; a strict connection refuses the first setting
its model does not take. The inpainting samples pass a ``weight``, which no provider's inpainting
takes: lenient as well, and strict refuses ``weight``.
"""

from __future__ import annotations

import base64
import io
import json
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Optional

import pytest
from PIL import Image as PILImage

from langchain_mesh import Mesh
from langchain_mesh.errors import CapabilityError, SettingsError
from langchain_mesh.testing.stability import form_of

# --------------------------------------------------------------------------------------------------
# the seed's environment, under its names


class Folder:
    """``dataiku.Folder``: the two methods the samples call, over a local directory."""

    root: Path

    def __init__(self, folder_id: str):
        self.path = Folder.root / (folder_id or "default")
        self.path.mkdir(parents=True, exist_ok=True)

    @contextmanager
    def get_writer(self, name: str):
        with open(self.path / name, "wb") as f:
            yield f

    @contextmanager
    def get_download_stream(self, name: str):
        with open(self.path / name, "rb") as f:
            yield f


class _Dataiku:
    def __init__(self, mesh: Mesh):
        self._mesh = mesh
        self.Folder = Folder

    def api_client(self) -> Any:
        return SimpleNamespace(get_default_project=lambda: self._mesh)


def Image(data: bytes) -> PILImage.Image:  # noqa: N802 - IPython.display.Image's name
    return PILImage.open(io.BytesIO(data))


def display(image: PILImage.Image) -> None:
    image.load()  # decodes every pixel: a truncated or corrupt image raises here


# --------------------------------------------------------------------------------------------------
# the seed's samples (code between the markers is the seed's)


def seed_first_query(dataiku: Any, IMAGE_GENERATION_MODEL_ID: str) -> Any:
    # --- seed ---
    client = dataiku.api_client()
    project = client.get_default_project()

    # To list the image generation model ids, you can use project.list_llms(purpose="IMAGE_GENERATION")
    IMAGE_GENERATION_MODELS = project.list_llms(purpose="IMAGE_GENERATION")

    # Create a handle for the image generation model of your choice
    img_gen_model = project.get_llm(IMAGE_GENERATION_MODEL_ID)

    prompt_text = "Vibrant blue bird in a serene scene on a blooming cherry blossom branch. Tranquil morning sky background with soft pastel colors of dawn, gently blending pinks, purples, and soft oranges. Distant view of a calm lake reflecting the colors of the sky and surrounded by lush greenery."

    img_gen_query = img_gen_model.new_images_generation()
    img_gen_query.with_prompt(prompt_text)
    img_gen_resp = img_gen_query.execute()
    image_data = img_gen_resp.first_image()

    # You can display the image in your notebook
    if img_gen_resp.success:
        display(Image(image_data))

    # Or you can save the image to a managed folder
    FOLDER_ID = ""  # Enter your managed folder id here
    my_images_folder = dataiku.Folder(FOLDER_ID)
    with my_images_folder.get_writer("blue_bird.png") as writer:
        writer.write(image_data)
    # --- end ---
    return SimpleNamespace(models=IMAGE_GENERATION_MODELS, resp=img_gen_resp, prompt=prompt_text,
                           saved=Folder.root / "default" / "blue_bird.png")


def seed_parameters(dataiku: Any, IMAGE_GENERATION_MODEL_ID: str) -> Any:
    # --- seed ---
    client = dataiku.api_client()
    project = client.get_default_project()
    img_gen_model = project.get_llm(IMAGE_GENERATION_MODEL_ID)
    generation = img_gen_model.new_images_generation()
    generation.height = 1024
    generation.width = 1024
    generation.seed = 3
    # If the underlying model supports weighted prompts they will be passed with
    # their specified weight, otherwise they will just be merged and sent as a single prompt.
    generation.with_prompt("meat pizza", weight=0.8).with_prompt("rustic wooden table", weight=0.6)

    # Not all models or providers support more than one
    generation.images_to_generate = 1

    # Regardless of what parameter the underlying provider expects for the image dimensions,
    # when using the LLM Mesh API you can specify either the height and width or the aspect_ratio.
    # The LLM Mesh will do the translation between its API and the underlying provider.
    # Not all models support the same dimensions.
    generation.aspect_ratio = 21 / 9

    # The following parameters are not relevant for all models
    generation.with_negative_prompt("tomatoes, basil, green leaf", weight=1)
    generation.fidelity = 0.5 # from 0.1 to 1, how strongly to adhere to prompt
    # valid values depend on the targeted model
    generation.quality = "hd"
    generation.style = "anime"

    resp = generation.execute()
    # --- end ---
    return resp


def seed_prompted_variation(dataiku: Any, IMAGE_GENERATION_MODEL_ID: str, mode: str = "MASK_FREE") -> Any:
    # --- seed --- (the seed: "can also be used with the CONTROLNET_STRUCTURE and CONTROLNET_SKETCH modes")
    img_gen_model = dataiku.api_client().get_default_project().get_llm(IMAGE_GENERATION_MODEL_ID)

    # Your image to use as an input.
    # Here we're retrieving it from a managed folder but it could also be an image from a previous generation
    my_images_folder = dataiku.Folder("my_folder_id")
    with my_images_folder.get_download_stream("cat_on_the_beach.png") as img_file:
        input_img_data = img_file.read()

    # Create the generation query
    generation = img_gen_model.new_images_generation()
    generation.with_original_image(input_img_data, mode=mode, weight=0.3)
    generation.with_prompt("dog on the beach")
    resp = generation.execute()
    # --- end ---
    return resp


def seed_unprompted_variation(dataiku: Any, IMAGE_GENERATION_MODEL_ID: str) -> Any:
    # --- seed ---
    img_gen_model = dataiku.api_client().get_default_project().get_llm(IMAGE_GENERATION_MODEL_ID)

    # Your image to use as an input.
    # Here we're retrieving it from a managed folder but it could also be an image from a previous generation
    my_images_folder = dataiku.Folder("my_folder_id")
    with my_images_folder.get_download_stream("cat_on_the_beach.png") as img_file:
        input_img_data = img_file.read()

    # Create the generation query
    generation = img_gen_model.new_images_generation()
    generation.with_original_image(input_img_data, mode="VARY", weight=0.3)
    resp = generation.execute()
    # --- end ---
    return resp


def seed_inpainting_mask_image(dataiku: Any, IMAGE_GENERATION_MODEL_ID: str) -> Any:
    # --- seed ---
    img_gen_model = dataiku.api_client().get_default_project().get_llm(IMAGE_GENERATION_MODEL_ID)

    # Your image to use as an input.
    # Here we're retrieving it from a managed folder but it could also be an image from a previous generation
    my_images_folder = dataiku.Folder("my_folder_id")
    with my_images_folder.get_download_stream("cat_on_the_beach.png") as img_file:
        input_img_data = img_file.read()
    with my_images_folder.get_download_stream("cat_black_mask.png") as img_file:
        black_mask_image_data = img_file.read()


    # Create the generation query
    generation = img_gen_model.new_images_generation()
    generation.with_original_image(input_img_data, mode="INPAINTING", weight=0.1)
    generation.with_mask("MASK_IMAGE_BLACK", image=black_mask_image_data)
    generation.with_prompt("dog")
    resp = generation.execute()
    # --- end ---
    return resp


def seed_inpainting_alpha(dataiku: Any, IMAGE_GENERATION_MODEL_ID: str) -> Any:
    # --- seed ---
    img_gen_model = dataiku.api_client().get_default_project().get_llm(IMAGE_GENERATION_MODEL_ID)

    # Your image to use as an input.
    my_images_folder = dataiku.Folder("my_folder_id")
    with my_images_folder.get_download_stream("cat_transparent_background.png") as img_file:
        input_img_data = img_file.read()

    # Create the generation query
    generation = img_gen_model.new_images_generation()
    generation.with_original_image(input_img_data, mode="INPAINTING", weight=0.1)
    generation.with_mask("ORIGINAL_IMAGE_ALPHA")
    generation.with_prompt("Beach scene at sunset, with golden sands, gentle waves at the shore.")
    resp = generation.execute()
    # --- end ---
    return resp


# --------------------------------------------------------------------------------------------------
# the mesh over every local image provider, strict and lenient


SIDE = 128  # the input images: square (DALL-E 2 edits take squares), >= 64 px (Stability's minimum)


def _png(mode: str, color: Any, size: tuple[int, int] = (SIDE, SIDE)) -> bytes:
    out = io.BytesIO()
    PILImage.new(mode, size, color).save(out, "PNG")
    return out.getvalue()


def _inputs(folder: Path) -> None:
    """The files the samples read from "my_folder_id": a cat, its black mask (the top-left quarter is
    to be filled), the cat with a transparent background (the left half)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cat_on_the_beach.png").write_bytes(_png("RGB", (200, 170, 90)))
    mask = PILImage.new("L", (SIDE, SIDE), 255)
    mask.paste(0, (0, 0, SIDE // 2, SIDE // 2))
    buf = io.BytesIO()
    mask.save(buf, "PNG")
    (folder / "cat_black_mask.png").write_bytes(buf.getvalue())
    cat = PILImage.new("RGBA", (SIDE, SIDE), (200, 170, 90, 255))
    cat.paste((0, 0, 0, 0), (0, 0, SIDE // 2, SIDE))
    buf = io.BytesIO()
    cat.save(buf, "PNG")
    (folder / "cat_transparent_background.png").write_bytes(buf.getvalue())


def _config(servers: dict[str, Any], lenient: bool) -> dict[str, Any]:
    mode = {"image_settings": "lenient" if lenient else "strict", "max_retries": 0, "timeout": 10}
    oa, az, st, aws, gcp = (servers[k] for k in ("openai", "azure", "stability", "bedrock", "vertex"))
    return {"connections": {
        "oa": {"type": "openai", "api_key": "test-key", "base_url": oa.base_url, **mode,
               "models": [{"id": m, "purposes": ["IMAGE_GENERATION"]}
                          for m in ("dall-e-2", "dall-e-3", "gpt-image-1")]},
        "az": {"type": "azure_openai", "endpoint": az.base_url, "api_key": "test-key", "api_version": "2024-10-21",
               **mode, "models": [{"id": "dall-e-3-dep", "model": "dall-e-3", "purposes": ["IMAGE_GENERATION"]},
                                  {"id": "gpt-image-1-dep", "model": "gpt-image-1", "purposes": ["IMAGE_GENERATION"]}]},
        "st": {"type": "stability", "api_key": st.api_key, "base_url": st.url, **mode},
        "aws": {"type": "bedrock", "endpoint_url": aws.url, "region": "us-east-1", "access_key_id": "AKIDTESTKEY",
                "secret_access_key": "test-secret", **mode},
        "gcp": {"type": "vertex", "service_account_key": json.dumps(gcp.service_account_key()), "base_url": gcp.url,
                **mode},
    }}


@pytest.fixture(scope="module")
def _servers(_mesh_openai_server_session, _mesh_azure_openai_server_session, _mesh_stability_server_session,
             _mesh_bedrock_server_session, _mesh_vertex_server_session):
    servers = {"openai": _mesh_openai_server_session, "azure": _mesh_azure_openai_server_session,
               "stability": _mesh_stability_server_session, "bedrock": _mesh_bedrock_server_session,
               "vertex": _mesh_vertex_server_session}
    servers["azure"].deployments.setdefault("gpt-image-1-dep", "gpt-image-1")
    return servers


@pytest.fixture(scope="module")
def _meshes(_servers):
    meshes = {lenient: Mesh.from_config(_config(_servers, lenient)) for lenient in (False, True)}
    yield meshes
    for m in meshes.values():
        m.close()


@pytest.fixture
def seed(_meshes, _servers, tmp_path):
    """``seed(lenient)`` -> the seed's ``dataiku`` over the strict or lenient mesh; servers reset."""
    for s in _servers.values():
        s.reset()
    Folder.root = tmp_path
    _inputs(tmp_path / "my_folder_id")
    return lambda lenient=False: _Dataiku(_meshes[lenient])


def _server_of(llm_id: str, servers: dict[str, Any]) -> Any:
    return servers[{"openai": "openai", "azure_openai": "azure", "stability": "stability", "bedrock": "bedrock",
                    "vertex": "vertex"}[llm_id.split(":")[0]]]


def _last(llm_id: str, servers: dict[str, Any]) -> Any:
    srv = _server_of(llm_id, servers)
    return [r for r in srv.requests if r.path != "/token"][-1]


def _decoded(data: bytes) -> PILImage.Image:
    im = PILImage.open(io.BytesIO(data))
    im.load()
    assert im.format in ("PNG", "JPEG")
    return im


def _b64_image(value: str) -> PILImage.Image:
    return _decoded(base64.b64decode(value))


# --------------------------------------------------------------------------------------------------
# Your first image-generation query


def _prompt_sent(llm_id: str, req: Any) -> str:
    if llm_id.startswith("stability:"):
        return form_of(req)[0]["prompt"]
    body = req.json
    if llm_id.startswith("vertex:"):
        return body["instances"][0]["prompt"]
    if "text_prompts" in body:
        return body["text_prompts"][0]["text"]
    if "textToImageParams" in body:
        return body["textToImageParams"]["text"]
    return body["prompt"]


FIRST = ["openai:oa:dall-e-3", "openai:oa:gpt-image-1", "openai:oa:dall-e-2", "azure_openai:az:dall-e-3-dep",
         "stability:st:stable-image-core", "stability:st:stable-image-ultra", "stability:st:sd3.5-large",
         "bedrock:aws:stability.sd3-large-v1:0", "bedrock:aws:stability.stable-image-core-v1:0",
         "bedrock:aws:stability.stable-diffusion-xl-v1", "bedrock:aws:amazon.titan-image-generator-v2:0",
         "vertex:gcp:imagen-3.0-generate-002"]


@pytest.mark.parametrize("llm_id", FIRST)
def test_first_image_generation_query(seed, _servers, llm_id):
    out = seed_first_query(seed(), llm_id)
    assert llm_id in [m.id for m in out.models]
    assert out.resp.success and len(out.resp.images) == 1 and out.resp.ignored_settings == []
    saved = _decoded(out.saved.read_bytes())
    assert saved.width == saved.height  # every model's default shape is square
    assert _prompt_sent(llm_id, _last(llm_id, _servers)) == out.prompt


# --------------------------------------------------------------------------------------------------
# Parameterized query: each model sends what it takes, in its own words; the rest is reported


NEG = "tomatoes, basil, green leaf"
PARAMETERS = {
    # SDXL has weighted prompts (negative ones as negative weights), a 21:9-ish size, style presets, CFG
    "bedrock:aws:stability.stable-diffusion-xl-v1": (
        {"text_prompts": [{"text": "meat pizza", "weight": 0.8}, {"text": "rustic wooden table", "weight": 0.6},
                          {"text": NEG, "weight": -1.0}],
         "samples": 1, "style_preset": "anime", "cfg_scale": 5.0, "width": 1536, "height": 640, "seed": 3},
        ["quality"], (1536, 640)),
    # Stability's REST API weighs prompt words as (text:weight), takes 21:9 and (Core) style presets
    "stability:st:stable-image-core": (
        {"prompt": "(meat pizza:0.8), (rustic wooden table:0.6)", "negative_prompt": NEG, "output_format": "png",
         "style_preset": "anime", "aspect_ratio": "21:9", "seed": "3"},
        ["quality", "fidelity"], (147, 64)),
    "stability:st:sd3.5-large": (
        {"prompt": "(meat pizza:0.8), (rustic wooden table:0.6)", "negative_prompt": NEG, "output_format": "png",
         "model": "sd3.5-large", "cfg_scale": "5.0", "aspect_ratio": "21:9", "seed": "3"},
        ["quality", "style"], (147, 64)),
    # Titan: one plain prompt (the weighted ones merged), quality hd -> premium, 21:9 -> 1408x640
    "bedrock:aws:amazon.titan-image-generator-v2:0": (
        {"taskType": "TEXT_IMAGE",
         "textToImageParams": {"text": "meat pizza, rustic wooden table", "negativeText": NEG},
         "imageGenerationConfig": {"numberOfImages": 1, "quality": "premium", "cfgScale": 5.0, "seed": 3,
                                   "width": 1408, "height": 640}},
        ["style"], (1408, 640)),
    # DALL-E 3: quality hd; no seed, negative prompt, fidelity, anime style or 21:9 size
    "openai:oa:dall-e-3": (
        {"model": "dall-e-3", "prompt": "meat pizza, rustic wooden table", "n": 1, "quality": "hd",
         "response_format": "b64_json"},
        ["negative_prompt", "seed", "fidelity", "aspect_ratio", "style"], (1024, 1024)),
    # Imagen: negative prompt, seed (watermark off), fidelity as guidance; 21:9 is none of its ratios
    "vertex:gcp:imagen-3.0-generate-002": (
        {"instances": [{"prompt": "meat pizza, rustic wooden table"}], "parameters": {
            "negativePrompt": NEG, "sampleCount": 1, "seed": 3, "guidanceScale": 5.0, "addWatermark": False,
            "outputOptions": {"mimeType": "image/png"}}},
        ["quality", "style", "aspect_ratio"], (64, 64)),
}


@pytest.mark.parametrize("llm_id", list(PARAMETERS))
def test_parameterized_query_lenient(seed, _servers, llm_id):
    wire, ignored, size = PARAMETERS[llm_id]
    resp = seed_parameters(seed(lenient=True), llm_id)
    assert resp.success and len(resp.images) == 1
    assert sorted(resp.ignored_settings) == sorted(ignored)
    assert _decoded(resp.first_image()).size == size
    req = _last(llm_id, _servers)
    assert (form_of(req)[0] if llm_id.startswith("stability:") else req.json) == wire


@pytest.mark.parametrize("llm_id", list(PARAMETERS))
def test_parameterized_query_strict_refuses_what_the_model_does_not_take(seed, _servers, llm_id):
    _, ignored, _ = PARAMETERS[llm_id]
    with pytest.raises(SettingsError, match="does not take") as ei:
        seed_parameters(seed(), llm_id)
    assert ei.value.settings[0] in ignored  # the first one this model does not take
    assert f"{llm_id.split(':', 2)[2]} on " in str(ei.value)  # the error names the model
    assert [r for r in _server_of(llm_id, _servers).requests if r.path != "/token"] == []


# --------------------------------------------------------------------------------------------------
# Image-to-image


def _check_same_size(resp: Any) -> None:
    assert resp.success and resp.images
    for image in resp.images:
        assert _decoded(image.data).size == (SIDE, SIDE)  # the output takes the input's shape


PROMPTED = {
    "stability:st:stable-image-ultra": lambda r: form_of(r)[0] == {
        "prompt": "dog on the beach", "output_format": "png", "strength": "0.7"} and r.path.endswith("/ultra"),
    "stability:st:sd3.5-large": lambda r: (form_of(r)[0]["mode"], form_of(r)[0]["strength"]) == ("image-to-image",
                                                                                              "0.7"),
    "bedrock:aws:stability.sd3-large-v1:0": lambda r: (r.json["mode"], r.json["strength"]) == ("image-to-image", 0.7),
    "bedrock:aws:stability.stable-diffusion-xl-v1": lambda r: (
        r.json["init_image_mode"], r.json["image_strength"]) == ("IMAGE_STRENGTH", 0.3),
    "bedrock:aws:amazon.titan-image-generator-v2:0": lambda r: r.json["taskType"] == "IMAGE_VARIATION" and
        r.json["imageVariationParams"]["similarityStrength"] == 0.3 and
        r.json["imageVariationParams"]["text"] == "dog on the beach",
}


@pytest.mark.parametrize("llm_id", list(PROMPTED))
def test_prompted_variation(seed, _servers, llm_id):
    resp = seed_prompted_variation(seed(), llm_id)
    _check_same_size(resp)
    assert PROMPTED[llm_id](_last(llm_id, _servers))


def test_prompted_variation_on_gpt_image_drops_the_weight_when_lenient(seed, _servers):
    with pytest.raises(SettingsError, match="weight") as ei:
        seed_prompted_variation(seed(), "openai:oa:gpt-image-1")
    assert ei.value.settings == ["weight"]
    resp = seed_prompted_variation(seed(lenient=True), "openai:oa:gpt-image-1")
    _check_same_size(resp)
    assert resp.ignored_settings == ["weight"]
    req = _servers["openai"].last_request
    fields, files = form_of(req)
    assert req.path == "/v1/images/edits" and fields["prompt"] == "dog on the beach" and list(files) == ["image"]


CONTROL = {
    ("stability:st:stable-image-core", "CONTROLNET_STRUCTURE"): lambda r: r.path.endswith("/control/structure")
        and form_of(r)[0]["control_strength"] == "0.3",
    ("stability:st:stable-image-ultra", "CONTROLNET_SKETCH"): lambda r: r.path.endswith("/control/sketch")
        and form_of(r)[0]["control_strength"] == "0.3",
    ("bedrock:aws:amazon.titan-image-generator-v2:0", "CONTROLNET_STRUCTURE"): lambda r:
        r.json["textToImageParams"]["controlMode"] == "SEGMENTATION" and
        r.json["textToImageParams"]["controlStrength"] == 0.3,
    ("bedrock:aws:amazon.titan-image-generator-v2:0", "CONTROLNET_SKETCH"): lambda r:
        r.json["textToImageParams"]["controlMode"] == "CANNY_EDGE",
}
# Imagen's control has no strength: the seed's weight=0.3 is refused (strict) or dropped (lenient)
IMAGEN_CONTROL = {"CONTROLNET_STRUCTURE": "CONTROL_TYPE_CANNY", "CONTROLNET_SKETCH": "CONTROL_TYPE_SCRIBBLE"}


@pytest.mark.parametrize("llm_id,mode", list(CONTROL))
def test_controlnet_modes(seed, _servers, llm_id, mode):
    resp = seed_prompted_variation(seed(), llm_id, mode=mode)
    _check_same_size(resp)
    assert CONTROL[(llm_id, mode)](_last(llm_id, _servers))


@pytest.mark.parametrize("mode", list(IMAGEN_CONTROL))
def test_controlnet_modes_on_imagen(seed, _servers, mode):
    llm_id = "vertex:gcp:imagen-3.0-capability-001"
    with pytest.raises(SettingsError, match="weight"):
        seed_prompted_variation(seed(), llm_id, mode=mode)
    resp = seed_prompted_variation(seed(lenient=True), llm_id, mode=mode)
    _check_same_size(resp)
    assert resp.ignored_settings == ["weight"]
    body = _last(llm_id, _servers).json
    (ref,) = body["instances"][0]["referenceImages"]
    assert body["parameters"]["editMode"] == "EDIT_MODE_CONTROLLED_EDITING"
    assert (ref["referenceType"], ref["controlImageConfig"]["controlType"]) == ("REFERENCE_TYPE_CONTROL",
                                                                                IMAGEN_CONTROL[mode])


def test_unprompted_variation(seed, _servers):
    resp = seed_unprompted_variation(seed(), "bedrock:aws:amazon.titan-image-generator-v2:0")
    _check_same_size(resp)
    params = _servers["bedrock"].last_request.json["imageVariationParams"]
    assert "text" not in params and params["similarityStrength"] == 0.3
    # DALL-E 2's /images/variations has no strength: strict refuses the weight, lenient drops it
    with pytest.raises(SettingsError, match="weight"):
        seed_unprompted_variation(seed(), "openai:oa:dall-e-2")
    resp = seed_unprompted_variation(seed(lenient=True), "openai:oa:dall-e-2")
    _check_same_size(resp)
    assert resp.ignored_settings == ["weight"]
    fields, files = form_of(_servers["openai"].last_request)
    assert _servers["openai"].last_request.path == "/v1/images/variations" and "prompt" not in fields
    # no variation without a prompt on Stability or DALL-E 3: a capability error, never a silent other thing
    for llm_id in ("stability:st:stable-image-ultra", "openai:oa:dall-e-3", "vertex:gcp:imagen-3.0-generate-002"):
        for lenient in (False, True):
            with pytest.raises(CapabilityError, match="VARY"):
                seed_unprompted_variation(seed(lenient=lenient), llm_id)


def _mask_of(llm_id: str, req: Any) -> Optional[PILImage.Image]:
    if llm_id.startswith(("stability:", "openai:")):
        files = form_of(req)[1]
        return _decoded(files["mask"][2]) if "mask" in files else None
    body = req.json
    if llm_id.startswith("vertex:"):
        masks = [r for r in body["instances"][0]["referenceImages"] if r["referenceType"] == "REFERENCE_TYPE_MASK"]
        return _b64_image(masks[0]["referenceImage"]["bytesBase64Encoded"])
    if "mask_image" in body:
        return _b64_image(body["mask_image"])
    if "inPaintingParams" in body:
        return _b64_image(body["inPaintingParams"]["maskImage"])
    return None


INPAINT = ["stability:st:stable-image-core", "bedrock:aws:stability.stable-diffusion-xl-v1",
           "bedrock:aws:amazon.titan-image-generator-v2:0", "openai:oa:dall-e-2", "openai:oa:gpt-image-1",
           "vertex:gcp:imagen-3.0-capability-001"]
#: which pixel value marks "fill here" in each provider's mask (the seed's mask: black = fill)
FILL = {"stability": 255, "bedrock": 0, "openai": "transparent", "vertex": 255}


def _fill_marks(llm_id: str, mask: PILImage.Image) -> tuple[Any, Any]:
    """(the mark at the top-left quarter, the mark at the bottom-right): to fill, to keep."""
    inside, outside = (10, 10), (SIDE - 10, SIDE - 10)
    if FILL[llm_id.split(":")[0]] == "transparent":
        alpha = mask.convert("RGBA").getchannel("A")
        return alpha.getpixel(inside) == 0, alpha.getpixel(outside) == 255
    gray = mask.convert("L")
    want = FILL[llm_id.split(":")[0]]
    return gray.getpixel(inside) == want, gray.getpixel(outside) == 255 - want


@pytest.mark.parametrize("llm_id", INPAINT)
def test_inpainting_with_a_black_mask_image(seed, _servers, llm_id):
    with pytest.raises(SettingsError, match="weight"):  # no provider's inpainting takes an image weight
        seed_inpainting_mask_image(seed(), llm_id)
    resp = seed_inpainting_mask_image(seed(lenient=True), llm_id)
    _check_same_size(resp)
    assert resp.ignored_settings == ["weight"]
    req = _last(llm_id, _servers)
    mask = _mask_of(llm_id, req)
    assert mask is not None and mask.size == (SIDE, SIDE)
    assert _fill_marks(llm_id, mask) == (True, True)  # the same area, in the provider's convention
    if llm_id.startswith("stability:"):
        assert req.path == "/v2beta/stable-image/edit/inpaint" and form_of(req)[0]["prompt"] == "dog"
    elif "stable-diffusion" in llm_id:
        assert req.json["mask_source"] == "MASK_IMAGE_BLACK"
    elif "titan" in llm_id:
        assert req.json["taskType"] == "INPAINTING" and req.json["inPaintingParams"]["text"] == "dog"
    elif llm_id.startswith("vertex:"):
        assert req.json["parameters"]["editMode"] == "EDIT_MODE_INPAINT_INSERTION"
    else:
        assert req.path == "/v1/images/edits"


@pytest.mark.parametrize("llm_id", INPAINT)
def test_inpainting_the_transparent_pixels(seed, _servers, llm_id):
    resp = seed_inpainting_alpha(seed(lenient=True), llm_id)
    _check_same_size(resp)
    req = _last(llm_id, _servers)
    mask = _mask_of(llm_id, req)
    if llm_id.startswith(("stability:", "openai:")):
        assert mask is None  # the service paints the image's own transparent pixels
        assert form_of(req)[1]["image"][2][:8] == b"\x89PNG\r\n\x1a\n"
    elif "stable-diffusion" in llm_id:
        assert mask is None and req.json["mask_source"] == "INIT_IMAGE_ALPHA"
    else:  # Titan and Imagen take a mask image, made from the alpha channel: the transparent left half
        gray = mask.convert("L")
        fill = FILL[llm_id.split(":")[0]]
        assert gray.getpixel((10, SIDE - 10)) == fill and gray.getpixel((SIDE - 10, 10)) == 255 - fill
