"""Image embeddings: ``new_embeddings().add_image(...)``, ``EmbeddingRequest.images`` and
``MeshEmbeddings.embed_image``, translated per provider (Bedrock Titan Multimodal Embeddings, Vertex
multimodalembedding@001, Cohere embed-v4.0) and checked on the local wire-format servers; a model
without image embeddings refuses with CapabilityError."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest

from langchain_mesh import Mesh
from langchain_mesh.errors import CapabilityError, SettingsError
from langchain_mesh.testing.fakes import make_png

PNG = make_png(4, 4)
PNG2 = make_png(5, 3)


@pytest.fixture(scope="module")
def sa_key(_mesh_vertex_server_session):
    return _mesh_vertex_server_session.service_account_key()


def _bodies(server, needle):
    return [r.json for r in server.requests if needle in r.path]


def test_bedrock_titan_multimodal_mixed_query_keeps_order(bedrock_server):
    cfg = {"connections": {"aws": {"type": "bedrock", "endpoint_url": bedrock_server.url, "region": "us-east-1",
                                   "access_key_id": bedrock_server.access_key_id,
                                   "secret_access_key": bedrock_server.secret_access_key, "max_retries": 0}}}
    with Mesh.from_config(cfg) as mesh:
        llm = mesh.get_llm("bedrock:aws:amazon.titan-embed-image-v1")
        assert llm.capabilities.image_embedding
        q = llm.new_embeddings().add_text("a red square").add_image(PNG).add_text("blue").add_image(PNG2)
        q.settings["dimensions"] = 384
        vectors = q.execute().get_embeddings()
        assert len(vectors) == 4 and all(len(v) == 384 for v in vectors)
        alone = llm.new_embeddings().add_image(PNG2)
        alone.settings["dimensions"] = 384
        image_only = alone.execute().get_embeddings()[0]
        assert vectors[3] == image_only and vectors[1] != vectors[3]  # in the order added
        bodies = _bodies(bedrock_server, "amazon.titan-embed-image-v1")
        assert {"inputImage": base64.b64encode(PNG).decode(), "embeddingConfig": {"outputEmbeddingLength": 384}} \
            in bodies
        assert {"inputText": "a red square", "embeddingConfig": {"outputEmbeddingLength": 384}} in bodies
        with pytest.raises(SettingsError, match="dimensions=300"):
            q.settings["dimensions"] = 300
            q.execute()
        # a Titan *text* model does not take images: refused before anything is sent
        n = len(bedrock_server.requests)
        with pytest.raises(CapabilityError, match="does not embed images") as e:
            mesh.get_llm("bedrock:aws:amazon.titan-embed-text-v2:0").new_embeddings().add_image(PNG).execute()
        assert "amazon.titan-embed-image-v1" in str(e.value) and len(bedrock_server.requests) == n


def test_vertex_multimodalembedding(vertex_server, sa_key):
    cfg = {"connections": {"gcp": {"type": "vertex", "service_account_key": json.dumps(sa_key),
                                   "base_url": vertex_server.url, "max_retries": 0}}}
    with Mesh.from_config(cfg) as mesh:
        llm = mesh.get_llm("vertex:gcp:multimodalembedding@001")
        q = llm.new_embeddings().add_image(PNG).add_text("a cat")
        q.settings["dimensions"] = 256
        img, txt = q.execute().get_embeddings()
        assert len(img) == len(txt) == 256 and img != txt
        assert asyncio.run(q.aexecute()).get_embeddings() == [img, txt]  # the SDK's async request too
        predicts = [r for r in vertex_server.requests if r.path.endswith("multimodalembedding@001:predict")]
        assert predicts[0].path.startswith("/v1beta1/projects/")
        bodies = [r.json for r in predicts]
        assert {"instances": [{"image": {"bytesBase64Encoded": base64.b64encode(PNG).decode(),
                                         "mimeType": "image/png"}}], "parameters": {"dimension": 256}} in bodies
        assert {"instances": [{"text": "a cat"}], "parameters": {"dimension": 256}} in bodies
        with pytest.raises(CapabilityError, match="does not embed images"):
            mesh.get_llm("vertex:gcp:text-embedding-005").new_embeddings().add_image(PNG).execute()


async def test_cohere_embed_v4_images_and_embed_image(cohere_server, tmp_path):
    cfg = {"connections": {"co": {"type": "cohere", "api_key": cohere_server.api_key, "base_url": cohere_server.url,
                                  "max_retries": 0, "models": [{"id": "embed-v4.0"}, {"id": "embed-english-v2.0", "purposes": ["TEXT_EMBEDDING_EXTRACTION"]}]}}}
    with Mesh.from_config(cfg) as mesh:
        emb = mesh.get_llm("cohere:co:embed-v4.0").as_langchain_embeddings()
        path = tmp_path / "shot.png"
        path.write_bytes(PNG)
        data_url = "data:image/png;base64," + base64.b64encode(PNG2).decode()
        vectors = emb.embed_image([str(path), data_url, f"file://{path}"])
        assert len(vectors) == 3 and vectors[0] == vectors[2] != vectors[1] and len(vectors[0]) == 1536
        assert await emb.aembed_image([str(path)]) == [vectors[0]]
        bodies = _bodies(cohere_server, "/v2/embed")
        assert bodies[0] == {"model": "embed-v4.0", "images": ["data:image/png;base64," + base64.b64encode(PNG).decode()],
                             "input_type": "image", "embedding_types": ["float"]}
        with pytest.raises(SettingsError, match="does not download"):
            emb.embed_image(["https://example.com/cat.png"])
        with pytest.raises(SettingsError, match="cannot read"):
            emb.embed_image([str(tmp_path / "missing.png")])
        older = mesh.get_llm("cohere:co:embed-english-v2.0")  # images came with the v3.0 models
        with pytest.raises(CapabilityError, match="does not embed images"):
            older.new_embeddings().add_image(PNG).execute()


def test_text_only_models_refuse_images_with_capability_error():
    with Mesh.from_config({"connections": {"fake": {"type": "scripted"}}}) as mesh:
        llm = mesh.get_llm("scripted:fake:embed")
        with pytest.raises(CapabilityError, match="scripted:fake:embed does not embed images"):
            llm.new_embeddings().add_image(PNG).execute()
        with pytest.raises(CapabilityError):
            llm.as_langchain_embeddings().embed_image([PNG])
        with pytest.raises(SettingsError, match="add_image"):
            llm.new_embeddings().add_image(b"not an image")
        with pytest.raises(SettingsError, match="at least one text or image"):
            llm.new_embeddings().execute()


def test_a_declared_capability_is_not_enough_without_a_connection_that_sends_images(openai_server):
    # a config may claim image_embedding for a model; the openai connection has no image wire format,
    # so images are refused rather than dropped
    cfg = {"connections": {"oa": {"type": "openai", "api_key": "k", "base_url": openai_server.base_url,
                                  "models": [{"id": "text-embedding-3-small",
                                              "capabilities": {"image_embedding": True}}]}}}
    with Mesh.from_config(cfg) as mesh:
        llm = mesh.get_llm("openai:oa:text-embedding-3-small")
        with pytest.raises(CapabilityError, match="does not embed images"):
            llm.new_embeddings().add_image(PNG).execute()
    assert not openai_server.requests
