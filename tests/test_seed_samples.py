"""Every code sample of the reference documents that is in our scope, run as written in the seed except
for names, each with an assertion on its result.

Seeds: ``../shared/seeds/llm-mesh-api.md`` (the LLM Mesh API), ``custom-llm-connection.rst`` (a
custom connection plugin) and ``external-models-gateway.txt`` (the gateway). Names changed everywhere,
and only they: ``dataiku.api_client().get_default_project()`` is the mesh (``project = mesh``),
``DSSLLMStreamedCompletionChunk``/``Footer`` are :class:`StreamChunk`/:class:`StreamFooter`,
``DKUChatModel`` is :class:`MeshChatModel`, ``ManagedFolderDocumentRef`` comes from
``knowledge_banks.metadata``, and the ids (``LLM_ID``, ``KB_ID``...) are ours. Any other adapted line
says which and why in a comment.

Hosted models are the real provider SDKs against the local wire-format servers of
``langchain_mesh.testing``; knowledge banks are FAISS on disk, and Elasticsearch / Azure AI Search on
their local servers. Not here: the image-generation samples (the issue-22 tests own them) and the
fine-tuning section (``literalinclude`` of training scripts, no code in the seed).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("faiss")
pytest.importorskip("openai")

from langchain_core.documents import Document  # noqa: E402

from langchain_mesh import Mesh, StreamChunk, StreamFooter  # noqa: E402
from langchain_mesh.testing.fakes import make_png  # noqa: E402

LLM_ID = "openai:myopenai:gpt-4o"
EMBEDDING_MODEL_ID = "openai:myopenai:text-embedding-3-small"
KB_ID = "docs"


def _config(openai_server, tmp_path: Path, **banks) -> dict:
    return {
        "connections": {
            "myopenai": {"type": "openai", "api_key": "test-key", "base_url": openai_server.base_url,
                         "max_retries": 0, "models": [{"id": "gpt-4o"}, {"id": "text-embedding-3-small"}]},
            # a vLLM-style server: the one kind of connection that takes every setting of the settings sample
            "myvllm": {"type": "openai_compatible", "base_url": openai_server.base_url, "api_key": "test-key",
                       "max_retries": 0, "models": [{"id": "llama-3-8b", "capabilities": {
                           "log_probs": True, "tools": True, "tool_choice": True}}]},
            "fake": {"type": "scripted"},
        },
        "knowledge_banks": {KB_ID: {"backend": "faiss", "path": str(tmp_path / "kb"),
                                    "embedding_llm": "scripted:fake:embed"}, **banks},
    }


@pytest.fixture
def project(openai_server, tmp_path):
    """The seed's ``dataiku.api_client().get_default_project()``: here, the mesh."""
    mesh = Mesh.from_config(_config(openai_server, tmp_path))
    yield mesh
    mesh.close()


@pytest.fixture
def llm(project):
    return project.get_llm(LLM_ID)


def _sent(openai_server) -> dict:
    return openai_server.last_request.json


# ==================================================================================================
# llm-mesh-api.md: Read LLM Mesh metadata


def test_list_and_get_llms(project, capsys):
    llm_list = project.list_llms()
    for llm in llm_list:
        print(f"- {llm.description} (id: {llm.id})")
    out = capsys.readouterr().out
    assert f"(id: {LLM_ID})" in out and "(id: scripted:fake:embed)" in out


def test_list_llms_with_a_purpose(project, capsys):
    llm_list = project.list_llms(purpose="TEXT_EMBEDDING_EXTRACTION")
    for llm in llm_list:
        print(f"- {llm.description} (id: {llm.id})")
    out = capsys.readouterr().out
    assert f"(id: {EMBEDDING_MODEL_ID})" in out and LLM_ID not in out


# ==================================================================================================
# Perform completion queries on LLMs


def test_first_simple_completion(project, openai_server, capsys):
    openai_server.script(text="GPT, a marvel,\nDeep learning's symphony plays,\nThoughts dance, words unveil.")
    # Create a handle for the LLM of your choice
    llm = project.get_llm(LLM_ID)

    # Create and run a completion query
    completion = llm.new_completion()
    completion.with_message("Write a haiku on GPT models")
    resp = completion.execute()

    # Display the LLM output
    if resp.success:
        print(resp.text)
    assert capsys.readouterr().out.startswith("GPT, a marvel,")
    assert _sent(openai_server)["messages"] == [{"role": "user", "content": "Write a haiku on GPT models"}]


def test_multi_turn_and_system_prompts(llm, openai_server):
    completion = llm.new_completion()

    # First, put a system prompt
    completion.with_message("You are a poetic assistant who always answers in haikus", role="system")

    # Then, give an example, or send the conversation history
    completion.with_message("What is a transformer", role="user")
    completion.with_message("Transformers, marvels\nOf the deep learning research\nAttention, you need", role="assistant")

    # Then, the last query of the user
    completion.with_message("What's your name", role="user")

    resp = completion.execute()
    assert resp.success
    assert [m["role"] for m in _sent(openai_server)["messages"]] == ["system", "user", "assistant", "user"]


def test_multimodal_input(llm, openai_server, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("myimage.jpg").write_bytes(make_png(8, 8))  # adapted: the seed's image file is made here
    completion = llm.new_completion()

    with open("myimage.jpg", "rb") as f:
        image = f.read()

    mp_message = completion.new_multipart_message()
    mp_message.with_text("The image represents an artwork. Describe it as it would be described by art critics")
    mp_message.with_inline_image(image)

    # Add it to the completion request
    mp_message.add()

    resp = completion.execute()
    assert resp.success
    parts = _sent(openai_server)["messages"][0]["content"]
    assert parts[0]["type"] == "text" and parts[1]["image_url"]["url"].startswith("data:image/png;base64,")


def test_completion_settings(project, openai_server):
    # adapted: an openai_compatible (vLLM-style) LLM, because OpenAI itself has no topK and the seed sets it
    llm = project.get_llm("openai_compatible:myvllm:llama-3-8b")
    completion = llm.new_completion()
    completion.with_message("Write a haiku on GPT models")

    completion.settings["temperature"] = 0.7
    completion.settings["topK"] = 10
    completion.settings["topP"] = 0.3
    completion.settings["maxOutputTokens"] = 2048
    completion.settings["stopSequences"] = [".", "\n"]
    completion.settings["presencePenalty"] = 0.6
    completion.settings["frequencyPenalty"] = 0.9
    completion.settings["logitBias"] = {
      1489: 60,  # apply a logit bias of 60 on token value "1489"
    }
    completion.settings["logProbs"] = True
    completion.settings["topLogProbs"] = 3

    resp = completion.execute()
    assert resp.success
    sent = _sent(openai_server)
    assert (sent["temperature"], sent["top_k"], sent["top_p"], sent["stop"]) == (0.7, 10, 0.3, [".", "\n"])
    assert (sent["presence_penalty"], sent["frequency_penalty"], sent["logit_bias"]) == (0.6, 0.9, {"1489": 60})
    assert sent["logprobs"] is True and sent["top_logprobs"] == 3
    assert 2048 in (sent.get("max_tokens"), sent.get("max_completion_tokens"))


def test_response_streaming(llm, openai_server, capsys):
    # the seed imports DSSLLMStreamedCompletionChunk, DSSLLMStreamedCompletionFooter from dataikuapi.dss.llm
    DSSLLMStreamedCompletionChunk, DSSLLMStreamedCompletionFooter = StreamChunk, StreamFooter
    openai_server.script(text="Special relativity says the speed of light is the same for everyone.")

    completion = llm.new_completion()
    completion.with_message("Please explain special relativity")

    for chunk in completion.execute_streamed():
        if isinstance(chunk, DSSLLMStreamedCompletionChunk):
            print("Received text: %s" % chunk.data["text"])
        elif isinstance(chunk, DSSLLMStreamedCompletionFooter):
            print("Completion is complete: %s" % chunk.data)
    out = capsys.readouterr().out
    assert out.count("Received text: ") > 3 and "Completion is complete: {'finishReason': 'stop'" in out
    assert _sent(openai_server)["stream"] is True


# ==================================================================================================
# Text embedding


def test_text_embedding(project, openai_server, capsys):
    # Create a handle for the embedding model of your choice
    emb_model = project.get_llm(EMBEDDING_MODEL_ID)

    # Create and run an embedding query
    txt = "The quick brown fox jumps over the lazy dog."
    emb_query = emb_model.new_embeddings()
    emb_query.add_text(txt)
    emb_resp = emb_query.execute()

    # Display the embedding output
    print(emb_resp.get_embeddings())
    vectors = emb_resp.get_embeddings()
    assert len(vectors) == 1 and len(vectors[0]) > 8 and capsys.readouterr().out.startswith("[[")
    assert _sent(openai_server)["input"] == [txt]


# ==================================================================================================
# Tool calls

MULTIPLY_TOOL = {
    "type": "function",
    "function": {
      "name": "multiply",
      "description": "Multiply integers",
      "parameters": {
        "type": "object",
        "properties": {
          "a": {
            "type": "integer",
            "description": "The first integer to multiply",
          },
          "b": {
            "type": "integer",
            "description": "The other integer to multiply",
          },
        },
        "required": ["a", "b"],
      }
    }
  }


def test_tool_calls_stream_and_tool_outputs(llm, openai_server, capsys):
    DSSLLMStreamedCompletionChunk, DSSLLMStreamedCompletionFooter = StreamChunk, StreamFooter
    openai_server.script(tool_calls=[("multiply", {"a": 3, "b": 6})])

    # -- Define tools
    completion = llm.new_completion()
    completion.settings["tools"] = [MULTIPLY_TOOL]  # adapted: the seed's literal, defined above once

    completion.with_message("What is 3 * 6 ?")
    resp = completion.execute()

    print(resp.tool_calls)
    assert resp.tool_calls[0]["function"] == {"name": "multiply", "arguments": '{"a": 3, "b": 6}'}
    assert _sent(openai_server)["tools"][0]["function"]["name"] == "multiply"

    # -- Response streaming with tool calls
    openai_server.script(tool_calls=[("multiply", {"a": 3, "b": 6})])
    for chunk in completion.execute_streamed():
        if isinstance(chunk, DSSLLMStreamedCompletionChunk):
            if "text" in chunk.data:
                print("Received text: %s" % chunk.data["text"])
            if "toolCalls" in chunk.data:
                print("Received tool call: %s" % chunk.data["toolCalls"])

        elif isinstance(chunk, DSSLLMStreamedCompletionFooter):
            print("Completion is complete: %s" % chunk.data)
    out = capsys.readouterr().out
    assert "Received tool call: [{" in out and "'finishReason': 'tool_calls'" in out

    # -- Provide tool outputs
    # Function to handle the tool call
    def multiply(llm_arguments):
        try:
            json_arguments = json.loads(llm_arguments)
            a = json_arguments["a"]
            b = json_arguments["b"]
            return str(a * b)
        except Exception as e:
            return f"Cannot call the 'multiply' tool: {str(e)}"

    tool_calls = resp.tool_calls
    call_id = tool_calls[0]["id"]
    llm_arguments = tool_calls[0]["function"]["arguments"]
    result = multiply(llm_arguments)

    completion.with_tool_calls(tool_calls)
    completion.with_tool_output(result, tool_call_id=call_id)

    openai_server.script(text="3 multiplied by 6 is 18.")
    resp = completion.execute()

    print(resp.text)
    assert resp.text == "3 multiplied by 6 is 18."
    sent = _sent(openai_server)["messages"]
    assert sent[-2]["tool_calls"][0]["id"] == call_id
    assert sent[-1] == {"role": "tool", "content": "18", "tool_call_id": call_id}


def test_control_tool_usage(llm, openai_server):
    completion = llm.new_completion()

    # Let the LLM decide whether to call a tool
    completion.settings["toolChoice"] = {"type": "auto"}

    # The LLM must call at least one tool
    completion.settings["toolChoice"] = {"type": "required"}

    # The LLM must not call any tool
    completion.settings["toolChoice"] = {"type": "none"}

    # The LLM must call the tool with name 'multiply'
    completion.settings["toolChoice"] = {"type": "tool_name", "name": "multiply"}

    # added to see the result: the sample only sets the setting
    completion.settings["tools"] = [MULTIPLY_TOOL]
    openai_server.script(tool_calls=[("multiply", {"a": 1, "b": 2})])
    completion.with_message("What is 1 * 2 ?").execute()
    assert _sent(openai_server)["tool_choice"] == {"type": "function", "function": {"name": "multiply"}}


# ==================================================================================================
# Knowledge Banks


def _fill(kb, docs):
    with kb.get_writer() as writer:
        writer.as_langchain_vectorstore().add_documents(docs)


def test_list_and_get_kbs(project, capsys):
    kb_list = project.list_knowledge_banks()

    for kb in kb_list:
        print(f"{kb.name} (id: {kb.id})")
    assert capsys.readouterr().out == f"{KB_ID} (id: {KB_ID})\n"

    kb_public_api = project.get_knowledge_bank(KB_ID)
    kb_core = kb_public_api.as_core_knowledge_bank()
    assert kb_core.id == KB_ID


def test_knowledge_banks_as_langchain_objects(project):
    _fill(project.get_knowledge_bank(KB_ID), [Document(page_content="Paris is the capital of France.")])
    kb_core = project.get_knowledge_bank(KB_ID).as_core_knowledge_bank()

    # Return a langchain.vectorstores.base.VectorStoreRetriever
    lc_generic_vs = kb_core.as_langchain_retriever()

    # Return an object which type depends on the KB type
    lc_vs = kb_core.as_langchain_vectorstore()

    from langchain_core.vectorstores import VectorStore, VectorStoreRetriever

    assert isinstance(lc_generic_vs, VectorStoreRetriever) and isinstance(lc_vs, VectorStore)
    assert lc_generic_vs.invoke("capital of France")[0].page_content == "Paris is the capital of France."
    assert type(lc_vs).__name__ == "FaissVectorStore"


def test_writing_documents_to_a_knowledge_bank(project, capsys, tmp_path):
    dss_kb = project.get_knowledge_bank(KB_ID)
    kb_core = dss_kb.as_core_knowledge_bank()

    document = Document(page_content="I can write to a knowledge bank!")

    with kb_core.get_writer() as writer:
        print(f"Start from folder {writer.folder_path}")
        # writer.clear()  # uncomment to clear the knowledge bank

        langchain_vs = writer.as_langchain_vectorstore()
        langchain_vs.add_documents([document])
    assert capsys.readouterr().out == f"Start from folder {tmp_path / 'kb'}\n"
    found = kb_core.as_langchain_vectorstore().similarity_search("write to a knowledge bank", k=1)
    assert found[0].page_content == "I can write to a knowledge bank!"


def test_saving_knowledge_bank_metadata(project):
    dss_kb = project.get_knowledge_bank(KB_ID)
    kb_core = dss_kb.as_core_knowledge_bank()

    kb_settings = dss_kb.get_settings()
    kb_settings.set_metadata_schema({
        "source": "string",
        "start_index": "int"
    })

    kb_settings.save()

    document = Document(
        page_content="I can set metadata",
        metadata={
          "source": "developer-guide",
          "start_index": 1
        }
    )

    with kb_core.get_writer() as writer:
        langchain_vs = writer.as_langchain_vectorstore()
        langchain_vs.add_documents([document])
    hit = kb_core.as_langchain_vectorstore().similarity_search("metadata", k=1, filter={"start_index": 1})[0]
    assert hit.metadata == {"source": "developer-guide", "start_index": 1}
    # the schema is enforced from now on
    from knowledge_banks.metadata import MetadataSchemaError

    with pytest.raises(MetadataSchemaError, match="start_index"):
        with kb_core.get_writer() as writer:
            writer.as_langchain_vectorstore().add_documents(
                [Document(page_content="x", metadata={"start_index": "one"})])


def test_setting_retrieval_content(project, tmp_path):
    dss_kb = project.get_knowledge_bank(KB_ID)
    kb_core = dss_kb.as_core_knowledge_bank()

    # -- The image folder of the knowledge bank
    # adapted: the seed's dataiku.Folder(IMAGE_FOLDER_ID) and its "<project>.<id>" name are a local folder
    images_folder_full_id = str(tmp_path / "kb-images")

    kb_settings = dss_kb.get_settings()
    kb_settings.set_images_folder(images_folder_full_id)
    kb_settings.save()

    # the seed's screenshot, already in the images folder
    shot = Path(images_folder_full_id, "path/to/screenshot/in/image/folder.jpg")
    shot.parent.mkdir(parents=True)
    shot.write_bytes(make_png(6, 6))
    ORIGINAL_DOCUMENT_FOLDER_ID = str(tmp_path / "originals")

    # -- The retrieval content, formatted with the writer
    from knowledge_banks.metadata import ManagedFolderDocumentRef  # seed: dataikuapi.dss.document_extractor

    # assumption: the document has only one page
    original_document_ref = ManagedFolderDocumentRef("/path/to/file.pdf", ORIGINAL_DOCUMENT_FOLDER_ID)

    with kb_core.get_writer() as writer:
        document = Document(page_content="Summarized text from VLM extraction")

        document = (
            writer.get_metadata_formatter()
                .with_original_document_ref(original_document_ref)
                .with_original_document_page_range(1, 1)  # one page
                .with_retrieval_content(image_paths=[
                    "/path/to/screenshot/in/image/folder.jpg"
                ])
                .format_metadata(document)
        )

        # writer.clear()  # uncomment to clear the knowledge bank
        langchain_vs = writer.as_langchain_vectorstore()
        langchain_vs.add_documents([document])

    [hit] = kb_core.as_langchain_retriever(search_kwargs={"k": 1}).invoke("Summarized text")
    assert hit.metadata["retrieval_images"] == [{"path": str(shot), "mime_type": "image/jpeg"}]
    assert json.loads(hit.metadata["mesh_document"]) == {
        "ref": "/path/to/file.pdf", "folder": ORIGINAL_DOCUMENT_FOLDER_ID, "page_start": 1, "page_end": 1}


HYBRID_DOCS = [Document(page_content="Paris is the capital of France."),
               Document(page_content="The mitochondria is the powerhouse of the cell."),
               Document(page_content="A text to match some documents about hybrid search.")]


def test_hybrid_search_azure_ai_search(openai_server, tmp_path, azure_search_server):
    pytest.importorskip("azure.search.documents")
    project = Mesh.from_config(_config(openai_server, tmp_path, azure={
        "backend": "azure_search", "embedding_llm": "scripted:fake:embed", "path": str(tmp_path / "az"),
        "settings": {"endpoint": azure_search_server.url, "key": azure_search_server.api_key}}))
    KB_ID = "azure"
    _fill(project.get_knowledge_bank(KB_ID), HYBRID_DOCS)

    kb_core = project.get_knowledge_bank(KB_ID).as_core_knowledge_bank()

    # 1 using as_langchain_retriever
    azure_classic_retriever = kb_core.as_langchain_retriever(search_type="similarity")
    azure_hybrid_retriever = kb_core.as_langchain_retriever(search_type="hybrid")
    azure_hybrid_advanced_retriever = kb_core.as_langchain_retriever(search_type="semantic_hybrid")
    for r in (azure_classic_retriever, azure_hybrid_retriever, azure_hybrid_advanced_retriever):
        assert r.invoke("mitochondria powerhouse")[0].page_content.startswith("The mitochondria")

    # 2 using as_langchain_vectorstore to get retriever
    azure_classic_retriever = kb_core.as_langchain_vectorstore().as_retriever(
      search_type="similarity")
    azure_hybrid_retriever = kb_core.as_langchain_vectorstore().as_retriever(
      search_type="hybrid")
    azure_hybrid_advanced_retriever = kb_core.as_langchain_vectorstore().as_retriever(
      search_type="semantic_hybrid")
    assert azure_hybrid_retriever.invoke("capital of France")[0].page_content == "Paris is the capital of France."

    # 3 using as_langchain_vectorstore to perform query
    query = "A text to match some doccuments"
    azure_classic_result = kb_core.as_langchain_vectorstore().similarity_search(query)
    azure_hybrid_result = kb_core.as_langchain_vectorstore().hybrid_search(query)
    azure_hybrid_advanced_result = kb_core.as_langchain_vectorstore().semantic_hybrid_search(query)
    for result in (azure_classic_result, azure_hybrid_result, azure_hybrid_advanced_result):
        assert result[0].page_content == "A text to match some documents about hybrid search."
    searches = [r.json for r in azure_search_server.requests if r.path.endswith("/docs/search.post.search")]
    assert any("vectorQueries" in b and b.get("search") and b.get("queryType") == "semantic" for b in searches)
    project.close()


def test_hybrid_search_elasticsearch(openai_server, tmp_path, elasticsearch_server):
    pytest.importorskip("elasticsearch")
    project = Mesh.from_config(_config(openai_server, tmp_path, elastic={
        "backend": "elasticsearch", "embedding_llm": "scripted:fake:embed", "path": str(tmp_path / "es"),
        "settings": {"es_url": elasticsearch_server.url}}))
    KB_ID = "elastic"
    _fill(project.get_knowledge_bank(KB_ID), HYBRID_DOCS)
    n = len(elasticsearch_server.requests)

    from elasticsearch.helpers.vectorstore import DenseVectorStrategy

    kb_core = project.get_knowledge_bank(KB_ID).as_core_knowledge_bank()

    hybrid_strategy = DenseVectorStrategy(hybrid=True)
    hybrid_advanced_strategy = DenseVectorStrategy(hybrid=True, rrf=True)

    # 1 using as_langchain_retriever
    elastic_classic = kb_core.as_langchain_retriever()
    elastic_hybrid = kb_core.as_langchain_retriever(
      vectorstore_kwargs={"strategy": hybrid_strategy})
    elastic_hybrid_advanced = kb_core.as_langchain_retriever(
      vectorstore_kwargs={"strategy": hybrid_advanced_strategy})
    results = [r.invoke("mitochondria powerhouse") for r in (elastic_classic, elastic_hybrid, elastic_hybrid_advanced)]

    # 2 using as_langchain_vectorstore
    elastic_classic = kb_core.as_langchain_vectorstore().as_retriever()
    elastic_hybrid = kb_core.as_langchain_vectorstore(
      strategy=hybrid_strategy).as_retriever(search_type="similarity")
    elastic_hybrid_advanced = kb_core.as_langchain_vectorstore(
      strategy=hybrid_advanced_strategy).as_retriever(search_type="similarity")
    results += [r.invoke("mitochondria powerhouse") for r in (elastic_classic, elastic_hybrid, elastic_hybrid_advanced)]

    assert all(r[0].page_content.startswith("The mitochondria") for r in results)
    bodies = [r.json for r in elasticsearch_server.requests[n:] if r.path.endswith("/_search")]
    kinds = ["rrf" if "retriever" in b else "knn" for b in bodies]
    # DenseVectorStrategy(hybrid=True) leaves rrf at the helper's default (True): both hybrid forms run RRF
    assert kinds == ["knn", "rrf", "rrf", "knn", "rrf", "rrf"]
    project.close()


# ==================================================================================================
# LangChain integration


def test_transforming_llm_handles_to_langchain_llm(llm, openai_server, capsys):
    # In this sample, llm is the result of calling project.get_llm() (see above)

    # Turn a regular LLM handle into a langchain-compatible one
    langchain_llm = llm.as_langchain_llm()

    # Run a single completion query
    openai_server.script(text="one haiku")
    assert langchain_llm.invoke("Write a haiku on GPT models") == "one haiku"

    # Run a batch of completion queries
    openai_server.script(text="first").script(text="second")
    assert sorted(langchain_llm.batch(["Write a haiku on GPT models", "Write a haiku on GPT models in German"])) \
        == ["first", "second"]

    # Run a completion query and stream the response
    openai_server.script(text="streamed haiku words")
    for chunk in langchain_llm.stream("Write a haiku on GPT models"):
        print(chunk, end="", flush=True)
    assert capsys.readouterr().out == "streamed haiku words"


def test_transforming_llm_handles_to_langchain_chat_model(llm, openai_server, capsys):
    # Turn a regular LLM handle into a langchain-compatible one
    langchain_llm = llm.as_langchain_chat_model()

    # Run a simple query
    openai_server.script(text="A haiku.")
    assert langchain_llm.invoke("Write a haiku on GPT models").content == "A haiku."

    # Run a chat query
    from langchain_core.messages import HumanMessage, SystemMessage

    messages = [
        SystemMessage(content="You're a helpful assistant"),
        HumanMessage(content="What is the purpose of model regularization?"),
    ]
    langchain_llm.invoke(messages)
    assert _sent(openai_server)["messages"][0] == {"role": "system", "content": "You're a helpful assistant"}

    # Streaming and chaining
    # adapted: `from langchain.prompts import ChatPromptTemplate`; the `langchain` package re-exports
    # langchain-core's class, and only langchain-core is a dependency here
    from langchain_core.prompts import ChatPromptTemplate

    prompt = ChatPromptTemplate.from_template("Tell me a joke about {topic}")
    chain = prompt | langchain_llm
    openai_server.script(text="Why did the parrot talk?")
    for chunk in chain.stream({"topic": "parrot"}):
        print(chunk.content, end="", flush=True)
    assert capsys.readouterr().out == "Why did the parrot talk?"
    assert _sent(openai_server)["messages"] == [{"role": "user", "content": "Tell me a joke about parrot"}]


def _mesh_config_file(openai_server, tmp_path, monkeypatch) -> None:
    """``DKUChatModel(llm_id=...)`` finds its mesh from the environment (inside DSS); ours from MESH_CONFIG."""
    path = tmp_path / "mesh.json"  # JSON is YAML
    path.write_text(json.dumps(_config(openai_server, tmp_path)))
    monkeypatch.setenv("MESH_CONFIG", str(path))


def test_creating_langchain_models_directly_and_streaming(openai_server, tmp_path, monkeypatch, capsys):
    _mesh_config_file(openai_server, tmp_path, monkeypatch)
    from langchain_mesh import MeshChatModel as DKUChatModel  # seed: from dataiku.langchain.dku_llm
    from langchain_mesh import MeshLLM as DKULLM  # noqa: F401

    langchain_llm = DKUChatModel(llm_id=LLM_ID)  # For example: openai:myopenai:gpt-4o
    openai_server.script(text="Regularization fights overfitting.")

    from langchain_core.messages import HumanMessage, SystemMessage

    messages = [
        SystemMessage(content="You're a helpful assistant"),
        HumanMessage(content="What is the purpose of model regularization?"),
    ]

    for gen in langchain_llm.stream(messages):
        print(gen)
    out = capsys.readouterr().out
    assert "content='Regularization'" in out or "content='Regularization " in out
    assert _sent(openai_server)["stream"] is True


def test_langchain_tool_calls(project, openai_server):
    from langchain_core.messages import HumanMessage
    from langchain_core.tools import tool

    # Define tools

    @tool
    def add(a: int, b: int) -> int:
        """Adds a and b."""
        return a + b

    @tool
    def multiply(a: int, b: int) -> int:
        """Multiplies a and b."""
        return a * b

    tools_by_name = {"add": add, "multiply": multiply}
    tools = [add, multiply]
    tool_choice = {"type": "auto"}

    # Get the LangChain chat model, bind it to the tools
    llm_id = LLM_ID  # For example: "openai:myopenai:gpt-4o"
    llm = project.get_llm(llm_id).as_langchain_chat_model()
    llm_with_tools = llm.bind_tools(tools, tool_choice=tool_choice)

    openai_server.script(tool_calls=[("multiply", {"a": 3, "b": 12}), ("add", {"a": 6, "b": 4})])
    # Ask your question
    messages = [HumanMessage("What is 3 * 12? and 6 + 4?")]
    ai_msg = llm_with_tools.invoke(messages)
    messages.append(ai_msg)

    # Retrieve tool calls, run them and put the results in the chat messages
    for tool_call in ai_msg.tool_calls:
        tool_name = tool_call["name"]
        selected_tool = tools_by_name[tool_name]
        tool_msg = selected_tool.invoke(tool_call)
        messages.append(tool_msg)

    # Get the final response
    openai_server.script(text="3 * 12 is 36, and 6 + 4 is 10.")
    ai_msg = llm.invoke(messages)
    ai_msg.content
    assert ai_msg.content == "3 * 12 is 36, and 6 + 4 is 10."
    sent = _sent(openai_server)["messages"]
    assert [(m["role"], m.get("content")) for m in sent[-2:]] == [("tool", "36"), ("tool", "10")]


# ==================================================================================================
# OpenAI-compatible API (mesh serve)


@pytest.fixture
def served(project):
    pytest.importorskip("uvicorn")
    from test_server_harness import RunningServer

    with RunningServer(project) as srv:
        yield srv


def test_openai_compatible_simple_chat_completion(served, openai_server, capsys):
    from openai import OpenAI

    BASE_URL = served.base_url  # the `mesh serve` URL
    API_KEY = "any"  # adapted: this mesh's server section declares no keys, so none is checked
    LLM_ID_ = LLM_ID

    # Create an OpenAI client
    openai_client = OpenAI(
      base_url=BASE_URL,
      api_key=API_KEY
    )
    openai_server.script(text="GPT, a marvel,")

    resp = openai_client.chat.completions.create(
      model=LLM_ID_,
      messages=[{"role": "user", "content": "Write a haiku on GPT models" }],
    )

    if resp and resp.choices:
      print(resp.choices[0].message.content)
    assert capsys.readouterr().out == "GPT, a marvel,\n"


def test_openai_compatible_streaming_chat_completion(served, openai_server, capsys):
    from openai import OpenAI

    openai_client = OpenAI(base_url=served.base_url, api_key="any")
    openai_server.script(text="Words weave through the code")

    resp = openai_client.chat.completions.create(
      model=LLM_ID,
      messages=[{"role": "user", "content": "Write a haiku on GPT models" }],
      stream=True
    )

    for chunk in resp:
        if chunk.choices and chunk.choices[0].delta and chunk.choices[0].delta.content:
            print(chunk.choices[0].delta.content)
    out = capsys.readouterr().out
    assert out.replace("\n", "") == "Words weave through the code" and out.count("\n") > 2


# ==================================================================================================
# external-models-gateway.txt

# The seed's three ``client.create_endpoint(name=..., config=...)`` samples. Our equivalent of an
# endpoint is a mesh connection, declared in the config rather than created through mlflow's deployment
# client (there is no Databricks workspace here): each test keeps the seed's endpoint name, model,
# task and ``{{secrets/scope/key}}`` references, puts them in a connection (adapted lines, marked),
# resolves the references through the env resolver, and queries the endpoint the way its task says.
# The local servers check the key, so an assertion passing means the reference was resolved and sent.


def _secrets_env(monkeypatch, **values):
    """``{{secrets/scope/key}}`` -> ``$MESH_SECRET_<SCOPE>__<KEY>`` (the env resolver's naming)."""
    for var, value in values.items():
        monkeypatch.setenv("MESH_SECRET_" + var, value)


def test_gateway_create_endpoint_anthropic(anthropic_server, monkeypatch):
    _secrets_env(monkeypatch, MY_ANTHROPIC_SECRET_SCOPE__ANTHROPIC_API_KEY="test-key")
    # the seed's endpoint config, as written
    config = {
        "served_entities": [
            {
                "name": "test",
                "external_model": {
                    "name": "claude-2",
                    "provider": "anthropic",
                    "task": "llm/v1/completions",
                    "anthropic_config": {
                        "anthropic_api_key": "{{secrets/my_anthropic_secret_scope/anthropic_api_key}}"
                    }
                }
            }
        ]
    }
    model = config["served_entities"][0]["external_model"]
    # adapted: client.create_endpoint(name="anthropic-completions-endpoint", config=config) becomes a
    # connection named after the endpoint (mlflow's client and a workspace are Databricks objects)
    mesh = Mesh.from_config({
        "secrets": {"resolver": "env"},
        "connections": {"anthropic-completions-endpoint": {
            "type": model["provider"], "api_key": model["anthropic_config"]["anthropic_api_key"],
            "base_url": anthropic_server.base_url, "max_retries": 0,  # adapted: the local Anthropic API
            "models": [{"id": model["name"]}]}}})
    anthropic_server.script(text="Databricks is a data and AI platform.")
    completion = mesh.get_llm("anthropic:anthropic-completions-endpoint:claude-2").new_completion()
    completion.with_message("what is databricks")  # the task is llm/v1/completions: one prompt
    resp = completion.execute()
    assert resp.success and resp.text == "Databricks is a data and AI platform."
    req = anthropic_server.last_request
    assert "test-key" in (req.headers.get("x-api-key"), req.headers.get("authorization", "")[7:]) and req.json["model"] == "claude-2"
    assert "secrets/" not in json.dumps(req.json)
    mesh.close()


def test_gateway_create_endpoint_azure_openai(azure_openai_server, monkeypatch):
    _secrets_env(monkeypatch, MY_OPENAI_SECRET_SCOPE__OPENAI_API_KEY="test-key")
    external_model = {
        "name": "gpt-3.5-turbo",
        "provider": "openai",
        "task": "llm/v1/chat",
        "openai_config": {
            "openai_api_type": "azure",
            "openai_api_key": "{{secrets/my_openai_secret_scope/openai_api_key}}",
            "openai_api_base": "https://my-azure-openai-endpoint.openai.azure.com",
            "openai_deployment_name": "my-gpt-35-turbo-deployment",
            "openai_api_version": "2023-05-15"
        }
    }
    cfg = external_model["openai_config"]
    assert cfg["openai_api_type"] == "azure"  # the seed's openai + azure is our azure_openai type
    # adapted: client.create_endpoint(name="openai-chat-endpoint", ...) becomes a connection; the
    # endpoint is the local Azure OpenAI resource instead of the seed's openai_api_base
    mesh = Mesh.from_config({
        "secrets": {"resolver": "env"},
        "connections": {"openai-chat-endpoint": {
            "type": "azure_openai", "endpoint": azure_openai_server.base_url,
            "api_key": cfg["openai_api_key"], "api_version": cfg["openai_api_version"], "max_retries": 0,
            "models": [{"id": cfg["openai_deployment_name"], "model": external_model["name"]}]}}})
    # the local resource has the seed's deployment
    monkeypatch.setitem(azure_openai_server.deployments, cfg["openai_deployment_name"], external_model["name"])
    azure_openai_server.script(text="Hello World!")
    completion = mesh.get_llm("azure_openai:openai-chat-endpoint:my-gpt-35-turbo-deployment").new_completion()
    completion.with_message("Hello", role="user")
    resp = completion.execute()
    assert resp.success and resp.text == "Hello World!"
    req = azure_openai_server.last_request
    assert req.path == "/openai/deployments/my-gpt-35-turbo-deployment/chat/completions"
    assert req.query["api-version"] == "2023-05-15" and req.headers.get("api-key") == "test-key"
    mesh.close()


def test_gateway_create_endpoint_amazon_bedrock(bedrock_server, monkeypatch):
    _secrets_env(monkeypatch, MY_AMAZON_BEDROCK_SECRET_SCOPE__AWS_ACCESS_KEY_ID="AKIDTESTKEY",
                 MY_AMAZON_BEDROCK_SECRET_SCOPE__AWS_SECRET_ACCESS_KEY="test-secret")
    amazon_bedrock_config = {
        "aws_region": "us-east-1",  # adapted: the seed's "<YOUR_AWS_REGION>" placeholder
        "aws_access_key_id": "{{secrets/my_amazon_bedrock_secret_scope/aws_access_key_id}}",
        "aws_secret_access_key": "{{secrets/my_amazon_bedrock_secret_scope/aws_secret_access_key}}",
        "bedrock_provider": "anthropic",
    }
    # adapted: client.create_endpoint(name="bedrock-anthropic-completions-endpoint", ...) becomes a
    # connection; Bedrock names the seed's claude-v2 (bedrock_provider anthropic) anthropic.claude-v2
    model_id = amazon_bedrock_config["bedrock_provider"] + ".claude-v2"
    mesh = Mesh.from_config({
        "secrets": {"resolver": "env"},
        "connections": {"bedrock-anthropic-completions-endpoint": {
            "type": "bedrock", "endpoint_url": bedrock_server.url,  # adapted: the local Bedrock Runtime
            "region": amazon_bedrock_config["aws_region"],
            "access_key_id": amazon_bedrock_config["aws_access_key_id"],
            "secret_access_key": amazon_bedrock_config["aws_secret_access_key"], "max_retries": 0,
            "models": [{"id": model_id}]}}})
    bedrock_server.script(text="Databricks is a data and AI platform.")
    completion = mesh.get_llm(f"bedrock:bedrock-anthropic-completions-endpoint:{model_id}").new_completion()
    completion.with_message("what is databricks")
    resp = completion.execute()
    assert resp.success and resp.text == "Databricks is a data and AI platform."
    req = bedrock_server.last_request
    # the local server checks the SigV4 signature made with the resolved secret key
    assert "Credential=AKIDTESTKEY/" in req.headers.get("Authorization") and "claude-v2" in req.path
    mesh.close()


def test_gateway_query_an_external_model_endpoint(anthropic_server, tmp_path, capsys):
    pytest.importorskip("uvicorn")
    from test_server_harness import RunningServer

    # the endpoint serves an Anthropic model, as in the seed; its name is a mesh LLM id
    mesh = Mesh.from_config({"connections": {"anthropic": {
        "type": "anthropic", "api_key": "test-key", "base_url": anthropic_server.base_url, "max_retries": 0,
        "models": [{"id": "claude-3-5-haiku-20241022"}]}}})
    anthropic_server.script(text="Databricks is a data and AI platform.")
    with RunningServer(mesh) as srv:
        import os  # noqa: F401
        import openai  # noqa: F401
        from openai import OpenAI

        client = OpenAI(
            api_key="dapi-your-databricks-token",
            base_url=srv.base_url  # adapted: the `mesh serve` URL instead of the serving-endpoints one
        )

        completion = client.completions.create(
          model="anthropic:anthropic:claude-3-5-haiku-20241022",  # the seed: "anthropic-completions-endpoint"
          prompt="what is databricks",
          temperature=1.0
        )
        print(completion)
    assert completion.object == "text_completion" and completion.model == "anthropic:anthropic:claude-3-5-haiku-20241022"
    assert completion.choices[0].text == "Databricks is a data and AI platform."
    assert completion.choices[0].index == 0 and completion.choices[0].finish_reason == "stop"
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens
    sent = anthropic_server.last_request.json
    assert sent["messages"] == [{"role": "user", "content": "what is databricks"}] and sent["temperature"] == 1.0
    assert "text_completion" in capsys.readouterr().out
    mesh.close()


# ==================================================================================================
# custom-llm-connection.rst


def test_custom_llm_connection_testing_the_connection(openai_server, tmp_path, monkeypatch, capsys):
    pytest.importorskip("json5")
    from langchain_mesh.credentials import new_key

    # the seed's plugin as written (llm.json, llm.py, parameter-set.json), in tests/plugins
    plugin = Path(__file__).parent / "plugins" / "tutorial-llm-connection"
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.base_url)  # the plugin's OpenAI() reaches the local API
    monkeypatch.setenv("MESH_CREDENTIALS_KEY", new_key())
    # adapted: the admin's "Custom LLM" connection (Fig. 5), the "OpenAI" preset of the parameter set and
    # the user's key in "Profile & Settings > Credentials" (Fig. 3) are config and credential store here
    mesh = Mesh({
        "presets": {"OpenAI": {"parameter_set": "parameter-custom-llm"}},
        "connections": {"mycustom": {"type": "custom", "plugin": str(plugin), "component": "custom-chat-plugin",
                                     "params": {"api_key": "OpenAI"}, "max_retries": 0,
                                     "models": [{"id": "gpt-4o-mini"}]}},
        "credentials": {"path": str(tmp_path / "credentials.json")}}, user="alice")
    mesh.credential_store.set("alice", "OpenAI", {"param_set_api_key": "test-key"})
    openai_server.script(text="Write a plugin with a Python agent.")

    LLM_ID = "custom:mycustom:gpt-4o-mini"  # custom:<connection-name>:<model_id>

    project = mesh  # adapted: dataiku.api_client().get_default_project()
    llm = project.get_llm(LLM_ID)
    completion = llm.new_completion()
    completion.with_message("How to code an agent in Dataiku?")
    resp = completion.execute()
    print(resp.text)
    assert capsys.readouterr().out == "Write a plugin with a Python agent.\n"
    sent = openai_server.last_request
    assert sent.json["messages"][-1] == {"role": "user", "content": "How to code an agent in Dataiku?"}
    assert sent.json["model"] == "gpt-4o-mini" and sent.headers.get("authorization") == "Bearer test-key"
    mesh.close()
