"""Image generation beyond the seed's samples: the documented behaviour of each edge (mask of the wrong
size, a mode a model lacks, weights on a model without weighted prompts, strict and lenient settings,
sizes snapped), ``mesh serve``'s images endpoints driven by the ``openai`` SDK, and ``mesh image``."""

from __future__ import annotations

import io
import json

import httpx
import pytest
from PIL import Image

from langchain_mesh import Mesh
from langchain_mesh.cli import main
from langchain_mesh.errors import CapabilityError, SettingsError
from langchain_mesh.schema import ImageGenerationRequest
from langchain_mesh.testing.stability import form_of


def png(size=(128, 128), mode="RGB", color=(10, 120, 200), clear=None) -> bytes:
    im = Image.new(mode, size, color)
    if clear is not None:  # a transparent box
        im.paste((0, 0, 0, 0), clear)
    out = io.BytesIO()
    im.save(out, "PNG")
    return out.getvalue()


def decoded(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


@pytest.fixture(scope="module")
def mesh(_mesh_openai_server_session, _mesh_stability_server_session, _mesh_bedrock_server_session,
         _mesh_vertex_server_session, _mesh_azure_openai_server_session):
    oa, st, aws, gcp = (_mesh_openai_server_session, _mesh_stability_server_session, _mesh_bedrock_server_session,
                        _mesh_vertex_server_session)
    _mesh_azure_openai_server_session.deployments.setdefault("gpt-image-1-dep", "gpt-image-1")
    m = Mesh.from_config({"connections": {
        "oa": {"type": "openai", "api_key": "test-key", "base_url": oa.base_url, "max_retries": 0,
               "models": [{"id": i, "purposes": ["IMAGE_GENERATION"]}
                          for i in ("dall-e-2", "dall-e-3", "gpt-image-1")]},
        "az": {"type": "azure_openai", "endpoint": _mesh_azure_openai_server_session.base_url, "api_key": "test-key",
               "api_version": "2024-10-21", "max_retries": 0,
               "models": [{"id": "dall-e-3-dep", "model": "dall-e-3", "purposes": ["IMAGE_GENERATION"]},
                          {"id": "gpt-image-1-dep", "model": "gpt-image-1", "purposes": ["IMAGE_GENERATION"]}]},
        "st": {"type": "stability", "api_key": st.api_key, "base_url": st.url, "max_retries": 0},
        "aws": {"type": "bedrock", "endpoint_url": aws.url, "region": "us-east-1", "access_key_id": "AKIDTESTKEY",
                "secret_access_key": "test-secret", "max_retries": 0},
        "gcp": {"type": "vertex", "service_account_key": json.dumps(gcp.service_account_key()), "base_url": gcp.url,
                "max_retries": 0},
    }})
    yield m
    m.close()


@pytest.fixture
def servers(openai_server, stability_server, bedrock_server, vertex_server):
    return {"oa": openai_server, "st": stability_server, "aws": bedrock_server, "gcp": vertex_server}


def gen(mesh, llm_id, prompt="a lighthouse"):
    g = mesh.get_llm(llm_id).new_images_generation()
    return g.with_prompt(prompt) if prompt else g


# --------------------------------------------------------------------------------------------------
# the settings of issue 14 item 3: images_to_generate, quality, style, fidelity, aspect ratio, success


def test_images_to_generate_is_n_on_the_wire(mesh, servers):
    g = gen(mesh, "openai:oa:dall-e-2")
    g.images_to_generate = 2
    r = g.execute()
    assert r.success and len(r.images) == 2 and servers["oa"].last_request.json["n"] == 2
    g = gen(mesh, "openai:oa:gpt-image-1")
    g.images_to_generate = 3
    assert len(g.execute().images) == 3 and servers["oa"].last_request.json["n"] == 3
    # DALL-E 3 makes one image a request: two images are two requests
    servers["oa"].reset()
    g = gen(mesh, "openai:oa:dall-e-3")
    g.images_to_generate = 2
    assert len(g.execute().images) == 2 and [q.json["n"] for q in servers["oa"].requests] == [1, 1]
    g = gen(mesh, "bedrock:aws:amazon.titan-image-generator-v2:0")
    g.images_to_generate = 4
    assert len(g.execute().images) == 4
    assert servers["aws"].last_request.json["imageGenerationConfig"]["numberOfImages"] == 4
    g = gen(mesh, "vertex:gcp:imagen-3.0-generate-002")
    g.images_to_generate = 3
    assert len(g.execute().images) == 3 and servers["gcp"].last_request.json["parameters"]["sampleCount"] == 3


def test_quality_and_style_sent_translated_or_refused(mesh, servers):
    g = gen(mesh, "openai:oa:dall-e-3")
    g.quality, g.style = "hd", "vivid"
    g.execute()
    body = servers["oa"].last_request.json
    assert (body["quality"], body["style"]) == ("hd", "vivid")
    g = gen(mesh, "openai:oa:gpt-image-1")
    g.quality = "hd"  # gpt-image says high
    g.execute()
    assert servers["oa"].last_request.json["quality"] == "high"
    g = gen(mesh, "bedrock:aws:amazon.titan-image-generator-v2:0")
    g.quality = "hd"  # Titan says premium
    g.execute()
    assert servers["aws"].last_request.json["imageGenerationConfig"]["quality"] == "premium"
    # refused with the model and the setting named, before any request
    servers["oa"].reset()
    g = gen(mesh, "openai:oa:dall-e-3")
    g.style = "anime"
    with pytest.raises(SettingsError, match=r"dall-e-3 on openai does not take 'style': 'anime' is not one of "
                                            r"natural, vivid") as ei:
        g.execute()
    assert ei.value.settings == ["style"]
    g = gen(mesh, "openai:oa:gpt-image-1")
    g.style = "vivid"
    with pytest.raises(SettingsError, match="gpt-image-1 on openai does not take 'style'"):
        g.execute()
    g = gen(mesh, "openai:oa:dall-e-2")
    g.fidelity = 0.5
    with pytest.raises(SettingsError, match="dall-e-2 on openai does not take 'fidelity'"):
        g.execute()
    assert servers["oa"].requests == []


def test_lenient_drops_and_reports(mesh, servers):
    g = gen(mesh, "openai:oa:dall-e-3")
    g.style, g.seed, g.lenient = "anime", 4, True
    r = g.execute()
    assert r.success and r.ignored_settings == ["seed", "style"]
    assert {"style", "seed"}.isdisjoint(servers["oa"].last_request.json)


@pytest.mark.parametrize("value,expected", [(21 / 9, "21:9"), ("21:9", "21:9"), ("21/9", "21:9"), (16 / 9, "16:9"),
                                            (1, "1:1"), (2.5, "5:2"), ("4 : 3", "4:3")])
def test_aspect_ratio_as_float_or_text(mesh, value, expected):
    g = gen(mesh, "stability:st:stable-image-core")
    g.aspect_ratio = value
    assert g.build_request().aspect_ratio == expected


@pytest.mark.parametrize("value", ["wide", "0:9", -1.5, True])
def test_bad_aspect_ratio_is_a_settings_error(mesh, value):
    g = gen(mesh, "stability:st:stable-image-core")
    g.aspect_ratio = value
    with pytest.raises(SettingsError, match="aspect_ratio must be") as ei:
        g.execute()
    assert ei.value.settings == ["aspect_ratio"]


def test_sizes_snap_to_what_the_model_takes(mesh, servers):
    g = gen(mesh, "openai:oa:dall-e-3")
    g.aspect_ratio = 16 / 9  # -> 1792x1024 (1.75, within 10%)
    assert decoded(g.execute().first_image()).size == (1792, 1024)
    assert servers["oa"].last_request.json["size"] == "1792x1024"
    g = gen(mesh, "bedrock:aws:stability.stable-diffusion-xl-v1")
    g.width, g.height = 1280, 720  # 16:9 -> SDXL's 1344x768
    assert decoded(g.execute().first_image()).size == (1344, 768)
    g = gen(mesh, "vertex:gcp:imagen-3.0-generate-002")
    g.aspect_ratio = "4:3"
    g.execute()
    assert servers["gcp"].last_request.json["parameters"]["aspectRatio"] == "4:3"
    g.aspect_ratio = "21:9"  # Imagen's widest is 16:9: 24% away is a refusal
    with pytest.raises(SettingsError, match="aspect ratio 21:9 is no aspect ratio it takes"):
        g.execute()


# --------------------------------------------------------------------------------------------------
# weights


def test_weights_stay_weighted_where_the_model_has_them_and_merge_elsewhere(mesh, servers):
    def weighted(llm_id):
        return gen(mesh, llm_id, None).with_prompt("fox", weight=0.9).with_prompt("snow", weight=0.2) \
            .with_negative_prompt("dogs", weight=0.5).execute()

    weighted("bedrock:aws:stability.stable-diffusion-xl-v1")
    assert servers["aws"].last_request.json["text_prompts"] == [
        {"text": "fox", "weight": 0.9}, {"text": "snow", "weight": 0.2}, {"text": "dogs", "weight": -0.5}]
    weighted("stability:st:sd3.5-large")
    fields = form_of(servers["st"].last_request)[0]
    assert (fields["prompt"], fields["negative_prompt"]) == ("(fox:0.9), (snow:0.2)", "(dogs:0.5)")
    weighted("bedrock:aws:amazon.titan-image-generator-v2:0")
    assert servers["aws"].last_request.json["textToImageParams"] == {"text": "fox, snow", "negativeText": "dogs"}
    weighted("vertex:gcp:imagen-3.0-generate-002")
    assert servers["gcp"].last_request.json["instances"] == [{"prompt": "fox, snow"}]
    # DALL-E takes no negative prompt at all: that one is refused, the weights alone merge
    r = gen(mesh, "openai:oa:dall-e-3", None).with_prompt("fox", weight=0.9).with_prompt("snow", weight=0.2).execute()
    assert r.ignored_settings == [] and servers["oa"].last_request.json["prompt"] == "fox, snow"


# --------------------------------------------------------------------------------------------------
# modes and masks


def test_a_mode_the_model_lacks_is_a_capability_error(mesh, servers):
    cases = [("openai:oa:dall-e-3", "INPAINTING"), ("openai:oa:dall-e-2", "MASK_FREE"),
             ("openai:oa:gpt-image-1", "VARY"), ("openai:oa:gpt-image-1", "CONTROLNET_SKETCH"),
             ("azure_openai:az:dall-e-3-dep", "VARY"), ("stability:st:sd3.5-large", "INPAINTING"),
             ("stability:st:stable-image-core", "MASK_FREE"), ("bedrock:aws:stability.sd3-large-v1:0", "VARY"),
             ("bedrock:aws:amazon.titan-image-generator-v1", "CONTROLNET_STRUCTURE"),
             ("vertex:gcp:imagen-3.0-generate-002", "MASK_FREE"), ("vertex:gcp:imagen-3.0-capability-001", "VARY"),
             ("vertex:gcp:imagen-3.0-capability-001", "MASK_FREE")]
    for llm_id, mode in cases:
        g = gen(mesh, llm_id).with_original_image(png(), mode=mode)
        if mode == "INPAINTING":
            g.with_mask("MASK_IMAGE_BLACK", image=png(mode="L", color=0))
        g.lenient = True  # a mode is never dropped, lenient or not
        with pytest.raises(CapabilityError, match=f"does not offer image-to-image mode {mode}"):
            g.execute()
    assert all(s.requests == [] for s in servers.values())


@pytest.mark.parametrize("llm_id", ["stability:st:stable-image-ultra", "bedrock:aws:amazon.titan-image-generator-v2:0",
                                    "bedrock:aws:stability.stable-diffusion-xl-v1", "openai:oa:dall-e-2",
                                    "vertex:gcp:imagen-3.0-capability-001"])
def test_a_mask_of_the_wrong_size_is_refused_before_sending(mesh, servers, llm_id):
    g = gen(mesh, llm_id).with_original_image(png((128, 128)), mode="INPAINTING")
    g.with_mask("MASK_IMAGE_BLACK", image=png((64, 64), mode="L", color=0))
    with pytest.raises(SettingsError, match="the mask is 64x64 but the original image is 128x128") as ei:
        g.execute()
    assert ei.value.settings == ["mask"]
    assert all(s.requests == [] for s in servers.values())


def test_the_local_servers_check_masks_themselves(servers):
    """What a client that skips the mesh's check gets: each server's own 400."""
    st = servers["st"]
    r = httpx.post(st.url + "/v2beta/stable-image/edit/inpaint", headers={"Authorization": f"Bearer {st.api_key}"},
                   data={"prompt": "dog"}, files={"image": ("i.png", png(), "image/png"),
                                                  "mask": ("m.png", png((64, 64), "L", 255), "image/png")})
    assert r.status_code == 400 and "mask: must have the image's dimensions" in r.json()["errors"][0]
    r = httpx.post(st.url + "/v2beta/stable-image/edit/inpaint", headers={"Authorization": f"Bearer {st.api_key}"},
                   data={"prompt": "dog"}, files={"image": ("i.png", png(), "image/png")})
    assert r.status_code == 400 and "alpha channel" in r.json()["errors"][0]
    client = servers["oa"].openai_client()
    import openai

    with pytest.raises(openai.BadRequestError, match="same dimensions"):
        client.images.edit(model="dall-e-2", prompt="dog", image=("i.png", png(), "image/png"),
                           mask=("m.png", png((64, 64), "RGBA", (0, 0, 0, 0)), "image/png"))
    with pytest.raises(openai.BadRequestError, match="must be square"):
        client.images.create_variation(model="dall-e-2", image=("i.png", png((128, 64)), "image/png"))
    with pytest.raises(openai.BadRequestError, match="Value must be 'dall-e-2'"):
        client.images.create_variation(model="gpt-image-1", image=("i.png", png(), "image/png"))

    import base64

    import boto3

    aws = boto3.client("bedrock-runtime", endpoint_url=servers["aws"].url, region_name="us-east-1",
                       aws_access_key_id="AKIDTESTKEY", aws_secret_access_key="test-secret")
    b64 = base64.b64encode(png()).decode()
    inpaint = {"taskType": "INPAINTING", "inPaintingParams": {
        "text": "dog", "image": b64, "maskImage": base64.b64encode(png((64, 64), "L", 0)).decode()}}
    with pytest.raises(aws.exceptions.ValidationException, match="must have the image's dimensions"):
        aws.invoke_model(modelId="amazon.titan-image-generator-v2:0", body=json.dumps(inpaint))
    control = {"taskType": "TEXT_IMAGE", "textToImageParams": {"text": "x", "conditionImage": b64,
                                                               "controlMode": "CANNY_EDGE"}}
    with pytest.raises(aws.exceptions.ValidationException, match="conditionImage"):  # a v2 feature
        aws.invoke_model(modelId="amazon.titan-image-generator-v1", body=json.dumps(control))
    sdxl = {"text_prompts": [{"text": "dog"}], "init_image": b64, "mask_source": "MASK_IMAGE_BLACK",
            "mask_image": base64.b64encode(png((64, 64), "L", 0)).decode()}
    with pytest.raises(aws.exceptions.ValidationException, match="init image's dimensions"):
        aws.invoke_model(modelId="stability.stable-diffusion-xl-v1", body=json.dumps(sdxl))


def test_azure_openai_edits_on_its_deployment_url(mesh, azure_openai_server):
    g = gen(mesh, "azure_openai:az:gpt-image-1-dep", "a dog").with_original_image(png(), mode="INPAINTING")
    g.with_mask("MASK_IMAGE_BLACK", image=png(mode="L", color=0))
    g.images_to_generate, g.quality = 2, "hd"
    r = g.execute()
    assert len(r.images) == 2 and decoded(r.first_image()).size == (128, 128)
    req = azure_openai_server.last_request
    assert req.path == "/openai/deployments/gpt-image-1-dep/images/edits" and req.query["api-version"]
    fields, files = form_of(req)
    assert (fields["n"], fields["quality"], fields["prompt"]) == ("2", "high", "a dog")
    assert decoded(files["mask"][2]).mode == "RGBA"  # the seed's black mask as OpenAI's transparent one


def test_builder_refuses_what_is_incoherent(mesh):
    g = gen(mesh, "openai:oa:dall-e-2")
    with pytest.raises(SettingsError, match="unknown image-to-image mode 'OUTPAINT'"):
        g.with_original_image(png(), mode="OUTPAINT")
    with pytest.raises(SettingsError, match="unknown mask type"):
        g.with_mask("WHITE")
    g.with_mask("ORIGINAL_IMAGE_ALPHA")
    with pytest.raises(SettingsError, match="is for mode INPAINTING, not text-to-image"):
        g.build_request()
    g = gen(mesh, "openai:oa:dall-e-2", None)
    with pytest.raises(SettingsError, match="needs a prompt"):
        g.build_request()
    with pytest.raises(SettingsError, match="INPAINTING needs a mask"):
        gen(mesh, "openai:oa:dall-e-2").with_original_image(png(), mode="INPAINTING").build_request()
    req = ImageGenerationRequest(prompt="a", negative_prompt="b")  # the old keyword form still reads
    assert (req.prompt, req.negative_prompt, req.prompts[0].weight) == ("a", "b", None)


# --------------------------------------------------------------------------------------------------
# mesh serve: the openai SDK's images.generate, images.edit, images.create_variation


@pytest.fixture(scope="module")
def gateway(mesh):
    pytest.importorskip("uvicorn")
    from test_server_harness import RunningServer

    with RunningServer(mesh) as srv:
        yield srv


def test_openai_sdk_against_mesh_serve(gateway, servers):
    import openai

    client = openai.OpenAI(base_url=gateway.base_url, api_key="none", max_retries=0)
    r = client.images.generate(model="openai:oa:dall-e-3", prompt="a fox", size="1792x1024", quality="hd", n=2)
    assert len(r.data) == 2 and decoded(__import__("base64").b64decode(r.data[0].b64_json)).size == (1792, 1024)
    assert servers["oa"].last_request.json["quality"] == "hd"

    r = client.images.generate(model="bedrock:aws:stability.stable-diffusion-xl-v1", prompt="a fox", size="1024x1024")
    assert len(r.data) == 1 and servers["aws"].last_request.json["width"] == 1024

    # an edit with a mask (transparent = edit) reaches Stability as its white-is-edit mask
    mask = png(mode="RGBA", color=(0, 0, 0, 255), clear=(0, 0, 64, 64))
    r = client.images.edit(model="stability:st:stable-image-core", prompt="a dog", image=("a.png", png(), "image/png"),
                           mask=("m.png", mask, "image/png"))
    fields, files = form_of(servers["st"].last_request)
    sent = decoded(files["mask"][2]).convert("L")
    assert servers["st"].last_request.path.endswith("/edit/inpaint") and fields["prompt"] == "a dog"
    assert (sent.getpixel((5, 5)), sent.getpixel((120, 120))) == (255, 0)
    assert decoded(__import__("base64").b64decode(r.data[0].b64_json)).size == (128, 128)

    # an edit without a mask of an image with transparent pixels inpaints them (DALL-E 2: the image alone)
    r = client.images.edit(model="openai:oa:dall-e-2", prompt="sky",
                           image=("t.png", png(mode="RGBA", color=(9, 9, 9, 255), clear=(0, 0, 128, 30)), "image/png"))
    assert len(r.data) == 1 and list(form_of(servers["oa"].last_request)[1]) == ["image"]
    # an opaque image without a mask is a prompted variation (MASK_FREE): Titan's IMAGE_VARIATION
    client.images.edit(model="bedrock:aws:amazon.titan-image-generator-v2:0", prompt="sky",
                       image=("o.png", png(), "image/png"))
    assert servers["aws"].last_request.json["taskType"] == "IMAGE_VARIATION"

    r = client.images.create_variation(model="openai:oa:dall-e-2", image=("v.png", png(), "image/png"), n=2)
    assert len(r.data) == 2 and servers["oa"].last_request.path == "/v1/images/variations"
    client.images.create_variation(model="bedrock:aws:amazon.titan-image-generator-v2:0",
                                   image=("v.png", png(), "image/png"))
    assert "text" not in servers["aws"].last_request.json["imageVariationParams"]


def test_mesh_serve_image_errors(gateway, servers):
    import openai

    client = openai.OpenAI(base_url=gateway.base_url, api_key="none", max_retries=0)
    with pytest.raises(openai.BadRequestError, match="does not offer image-to-image mode VARY") as ei:
        client.images.create_variation(model="openai:oa:dall-e-3", image=("v.png", png(), "image/png"))
    assert ei.value.body["param"] == "model"
    with pytest.raises(openai.BadRequestError, match="does not take 'style'") as ei:
        client.images.generate(model="openai:oa:gpt-image-1", prompt="x", style="vivid")
    assert ei.value.body["param"] == "style"
    r = httpx.post(gateway.base_url + "/images/edits",
                   data={"model": "openai:oa:dall-e-2", "prompt": "x", "bogus": "1"},
                   files={"image": ("i.png", png(), "image/png")})
    assert r.status_code == 400 and r.json()["error"]["param"] == "bogus"
    r = httpx.post(gateway.base_url + "/images/edits", json={"model": "openai:oa:dall-e-2", "prompt": "x"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_content_type"
    doc = httpx.get(gateway.url + "/openapi.json").json()
    assert "multipart/form-data" in doc["paths"]["/v1/images/edits"]["post"]["requestBody"]["content"]
    assert all(s.requests == [] for s in servers.values())


# --------------------------------------------------------------------------------------------------
# mesh image


def test_mesh_image_cli(tmp_path, capsys, stability_server):
    cfg = tmp_path / "mesh.yaml"
    cfg.write_text(json.dumps({"connections": {"st": {"type": "stability", "api_key": stability_server.api_key,
                                                      "base_url": stability_server.url, "max_retries": 0}}}))
    out = tmp_path / "out.png"
    assert main(["image", "a lighthouse", "-o", str(out), "--config", str(cfg)]) == 0
    assert decoded(out.read_bytes()).size == (64, 64) and capsys.readouterr().out.strip() == str(out)
    assert main(["image", "a lighthouse", "-o", str(out), "--config", str(cfg), "--aspect-ratio", "2.33", "-n", "2",
                 "--style", "anime", "--seed", "5"]) == 0
    assert [decoded((tmp_path / f"out-{i}.png").read_bytes()).size for i in (1, 2)] == [(147, 64)] * 2
    assert [form_of(r)[0]["seed"] for r in stability_server.requests[-2:]] == ["5", "6"]
    assert form_of(stability_server.last_request)[0]["style_preset"] == "anime"
    capsys.readouterr()
    assert main(["image", "x", "-o", str(out), "--config", str(cfg), "--quality", "hd"]) == 2
    assert "does not take 'quality'" in capsys.readouterr().err
    assert main(["image", "x", "-o", str(out), "--config", str(cfg), "--quality", "hd", "--lenient"]) == 0
    assert "does not take quality; not sent (--lenient)" in capsys.readouterr().err
    inp = tmp_path / "in.png"
    inp.write_bytes(png(mode="RGBA", color=(1, 2, 3, 255), clear=(0, 0, 64, 64)))
    assert main(["image", "a dog", "-o", str(out), "--config", str(cfg), "--image", str(inp), "--mode", "inpainting",
                 "--mask-alpha"]) == 0
    assert stability_server.last_request.path.endswith("/edit/inpaint")
    assert main(["image", "x", "-o", str(out), "--config", str(cfg), "--mode", "VARY"]) == 2


# --------------------------------------------------------------------------------------------------
# formats and the async path


@pytest.mark.parametrize("llm_id,fmt", [("openai:oa:gpt-image-1", "JPEG"), ("stability:st:stable-image-core", "JPEG"),
                                        ("vertex:gcp:imagen-3.0-generate-002", "JPEG"), ("openai:oa:dall-e-3", "PNG")])
def test_jpeg_or_png_as_asked(mesh, llm_id, fmt):
    g = gen(mesh, llm_id)
    g.mime_type = f"image/{fmt.lower()}"
    r = g.execute()
    assert r.images[0].mime_type == g.mime_type and decoded(r.first_image()).format == fmt
    g = gen(mesh, "openai:oa:dall-e-3")
    g.mime_type = "image/jpeg"  # DALL-E writes PNG only
    with pytest.raises(SettingsError, match="dall-e-3 on openai does not take 'mime_type'"):
        g.execute()


async def test_image_to_image_async(mesh, servers):
    g = gen(mesh, "stability:st:stable-image-ultra", "a dog").with_original_image(png(), mode="INPAINTING")
    g.with_mask("MASK_IMAGE_BLACK", image=png(mode="L", color=0))
    g.images_to_generate = 2
    r = await g.aexecute()
    assert len(r.images) == 2 and all(decoded(i.data).size == (128, 128) for i in r.images)
    assert [q.path for q in servers["st"].requests] == ["/v2beta/stable-image/edit/inpaint"] * 2
    g = gen(mesh, "openai:oa:gpt-image-1", "a dog").with_original_image(png()).with_original_image(png((64, 64)))
    r = await g.aexecute()
    fields, files = form_of(servers["oa"].last_request)
    assert r.success and list(files) == ["image[]"] and servers["oa"].last_request.path == "/v1/images/edits"
    g = gen(mesh, "vertex:gcp:imagen-3.0-capability-001", "a dog").with_original_image(png(), mode="CONTROLNET_SKETCH")
    r = await g.aexecute()
    assert decoded(r.first_image()).size == (128, 128)
