"""End to end on the embedded default: the real SmolLM2 and MiniLM weights, no mocks, no network.

Generation is greedy unless a test sets a temperature, so answers are reproducible.
"""

from __future__ import annotations

import json
import math
import random
import threading

import pytest

from langchain_mesh import Mesh, StreamChunk, StreamFooter
from langchain_mesh.errors import BadRequestError, CapabilityError, SettingsError

pytestmark = pytest.mark.local_model

CHAT = "huggingfacelocal:local:SmolLM2-135M-Instruct"
EMB = "huggingfacelocal:local:all-MiniLM-L6-v2"

MULTIPLY = {
    "type": "function",
    "function": {
        "name": "multiply",
        "description": "Multiply integers",
        "parameters": {
            "type": "object",
            "properties": {
                "a": {"type": "integer", "description": "The first integer to multiply"},
                "b": {"type": "integer", "description": "The other integer to multiply"},
            },
            "required": ["a", "b"],
        },
    },
}
ADD = {
    "type": "function",
    "function": {
        "name": "add",
        "description": "Add two numbers",
        "parameters": {"type": "object", "properties": {"x": {"type": "number"}, "y": {"type": "number"}},
                       "required": ["x", "y"]},
    },
}


@pytest.fixture(scope="module")
def mesh() -> Mesh:
    return Mesh()


@pytest.fixture(scope="module")
def llm(mesh):
    return mesh.get_llm(CHAT)


def test_embedded_default_lists_both_models(mesh):
    ids = {i.id for i in mesh.list_llms()}
    assert ids == {CHAT, EMB}
    assert [i.id for i in mesh.list_llms(purpose="TEXT_EMBEDDING_EXTRACTION")] == [EMB]
    assert [i.id for i in mesh.list_llms(purpose="GENERIC_COMPLETION")] == [CHAT]


def test_first_completion_answers_paris(llm):
    resp = llm.new_completion().with_message("What is the capital of France?").execute()
    assert resp.success
    assert "Paris" in resp.text
    assert resp.finish_reason == "stop"
    u = resp.usage
    assert u.input_tokens > 5 and u.output_tokens > 0 and u.total_tokens == u.input_tokens + u.output_tokens


def test_multi_turn_with_system_prompt_reaches_the_model(llm):
    one = llm.new_completion().with_message("What is my name?")
    one.settings["maxOutputTokens"] = 24
    conv = (llm.new_completion()
            .with_message("You are a helpful assistant.", role="system")
            .with_message("Hello, my name is Zorblax.", role="user")
            .with_message("Nice to meet you, Zorblax!", role="assistant")
            .with_message("What is my name?", role="user"))
    conv.settings["maxOutputTokens"] = 24
    without, with_history = one.execute(), conv.execute()
    # the earlier turns are in the prompt the model saw...
    assert with_history.usage.input_tokens > without.usage.input_tokens + 15
    # ...and the model uses them
    assert "Zorblax" in with_history.text
    assert "Zorblax" not in without.text


def test_system_prompt_changes_the_answer(llm):
    base = llm.new_completion().with_message("Say hello.")
    base.settings["maxOutputTokens"] = 20
    sys = llm.new_completion().with_message("Always answer in French.", role="system").with_message("Say hello.")
    sys.settings["maxOutputTokens"] = 20
    assert base.execute().text != sys.execute().text


def test_streaming_yields_chunks_then_one_footer(llm):
    q = llm.new_completion().with_message("Please explain special relativity")
    q.settings["maxOutputTokens"] = 30
    events = list(q.execute_streamed())
    chunks = [e for e in events if isinstance(e, StreamChunk)]
    footers = [e for e in events if isinstance(e, StreamFooter)]
    assert len(chunks) >= 2 and len(footers) == 1 and events[-1] is footers[0]
    assert all("text" in c.data for c in chunks)
    assert footers[0].data["finishReason"] == "length"
    assert footers[0].usage.output_tokens == 30
    # streaming is the same generation as a blocking call
    assert "".join(c.text or "" for c in chunks) == q.execute().text


def test_max_output_tokens_and_stop_sequences(llm):
    q = llm.new_completion().with_message("Count from 1 to 20, separated by commas.")
    q.settings["maxOutputTokens"] = 40
    full = q.execute().text
    assert "5" in full
    q.settings["stopSequences"] = ["5"]
    cut = q.execute()
    assert "5" not in cut.text and cut.finish_reason == "stop"
    assert full.startswith(cut.text)
    q2 = llm.new_completion().with_message("Count from 1 to 20, separated by commas.")
    q2.settings.update({"stopSequences": ["5"], "maxOutputTokens": 40})
    streamed = "".join(e.text or "" for e in q2.execute_streamed() if isinstance(e, StreamChunk))
    assert streamed == cut.text  # a stop sequence never leaks into a stream either


def test_logprobs_and_top_logprobs(llm):
    q = llm.new_completion().with_message("What is the capital of France?")
    q.settings.update({"logProbs": True, "topLogProbs": 3, "maxOutputTokens": 6})
    resp = q.execute()
    assert resp.log_probs and len(resp.log_probs) == resp.usage.output_tokens
    for lp in resp.log_probs:
        assert lp.logprob <= 0 and len(lp.top) == 3
        # greedy: the chosen token is the most likely one
        assert math.isclose(lp.logprob, lp.top[0][1], rel_tol=1e-5)
    assert "".join(lp.token for lp in resp.log_probs) == resp.text


def test_sampling_settings_and_seed(llm):
    def run(seed):
        q = llm.new_completion().with_message("Write a haiku on GPT models")
        q.settings.update({"temperature": 1.2, "topK": 50, "topP": 0.95, "seed": seed, "maxOutputTokens": 16,
                           "presencePenalty": 0.6, "frequencyPenalty": 0.9})
        return q.execute().text

    assert run(7) == run(7)
    assert len({run(s) for s in (1, 2, 3)}) > 1


def test_logit_bias_steers_and_is_validated(llm):
    tok = llm.connection._chat_model(llm.model).tokenizer
    target = tok.encode(" banana", add_special_tokens=False)[0]
    q = llm.new_completion().with_message("What is the capital of France?")
    q.settings.update({"logitBias": {target: 100}, "maxOutputTokens": 3})
    assert q.execute().text.count("banana") == 3
    q.settings["logitBias"] = {10_000_000: 5}
    with pytest.raises(SettingsError, match="logitBias"):
        q.execute()


def test_forced_tool_call_is_valid(llm):
    q = llm.new_completion().with_message("What is 3 * 6 ?")
    q.settings["tools"] = [MULTIPLY, ADD]
    q.settings["toolChoice"] = {"type": "tool_name", "name": "multiply"}
    resp = q.execute()
    assert resp.finish_reason == "tool_calls" and len(resp.tool_calls) == 1
    call = resp.tool_calls[0]
    assert call["function"]["name"] == "multiply" and call["id"].startswith("call_")
    args = json.loads(call["function"]["arguments"])
    assert set(args) == {"a", "b"} and all(isinstance(v, int) for v in args.values())

    # the seed's round trip: run the tool, hand back its output, get a text answer
    q.with_tool_calls(resp.tool_calls)
    q.with_tool_output(str(args["a"] * args["b"]), tool_call_id=call["id"])
    q.settings = {"tools": [MULTIPLY, ADD], "toolChoice": {"type": "none"}, "maxOutputTokens": 30}
    final = q.execute()
    assert final.tool_calls == [] and final.text


def test_required_tool_choice_streams_the_call(llm):
    q = llm.new_completion().with_message("Add 2 and 5")
    q.settings.update({"tools": [MULTIPLY, ADD], "toolChoice": {"type": "required"}})
    events = list(q.execute_streamed())
    footer = events[-1]
    assert isinstance(footer, StreamFooter) and footer.finish_reason == "tool_calls"
    deltas = [d for e in events if isinstance(e, StreamChunk) for d in e.tool_call_deltas]
    assert deltas and deltas[0].id == footer.tool_calls[0].id
    assert footer.tool_calls[0].function.name in {"multiply", "add"}
    json.loads(footer.tool_calls[0].function.arguments)


def test_auto_tool_choice_gives_text_or_a_valid_call(llm):
    import jsonschema

    for prompt in ("What is 3 * 6 ?", "Tell me a joke"):
        q = llm.new_completion().with_message(prompt)
        q.settings.update({"tools": [MULTIPLY], "toolChoice": {"type": "auto"}, "maxOutputTokens": 60})
        resp = q.execute()
        if resp.tool_calls:
            jsonschema.validate(json.loads(resp.tool_calls[0].function.arguments), MULTIPLY["function"]["parameters"])
        else:
            assert resp.text and "<tool_call>" not in resp.text


def test_json_output_follows_the_schema(llm):
    import jsonschema

    schema = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
              "required": ["name", "age"]}
    q = llm.new_completion().with_message("Give me a person named Bob who is 30 years old.")
    q.with_json_output(schema)
    resp = q.execute()
    jsonschema.validate(resp.json, schema)
    q2 = llm.new_completion().with_message("List three colors as JSON.").with_json_output()
    assert isinstance(q2.execute().json, dict)


def test_images_are_refused_with_a_clear_error(llm):
    png = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                        "1f15c4890000000d4944415478da63f8cfc0f01f0005000201a5dd1e5a0000000049454e44ae426082")
    q = llm.new_completion()
    q.new_multipart_message().with_text("Describe this").with_inline_image(png).add()
    with pytest.raises(CapabilityError, match="text-only"):
        q.execute()


def test_prompt_longer_than_the_context_window_is_a_bad_request(llm):
    q = llm.new_completion().with_message("word " * 9000)
    with pytest.raises(BadRequestError, match="tokens"):
        q.execute()


async def test_async_twins(llm):
    q = llm.new_completion().with_message("What is the capital of France?")
    resp = await q.aexecute()
    assert "Paris" in resp.text
    events = [e async for e in q.aexecute_streamed()]
    assert isinstance(events[-1], StreamFooter)
    assert "".join(e.text or "" for e in events[:-1]) == resp.text
    batch = llm.new_completions()
    for p in ("What is the capital of France?", "What is 2 + 2?"):
        batch.new_completion().with_message(p).settings["maxOutputTokens"] = 12
    out = await batch.aexecute()
    assert len(out) == 2 and all(r.success for r in out)


def test_embeddings_of_two_texts(mesh):
    q = mesh.get_llm(EMB).new_embeddings()
    q.add_text("The quick brown fox jumps over the lazy dog.")
    q.add_text("A fast auburn fox leaps above a sleepy hound.")
    q.add_text("Quarterly revenue grew by twelve percent.")
    resp = q.execute()
    a, b, c = resp.get_embeddings()
    assert len(a) == 384 and all(type(x) is float for x in a)
    assert math.isclose(sum(x * x for x in a), 1.0, rel_tol=1e-4)
    dot = lambda u, v: sum(x * y for x, y in zip(u, v))  # noqa: E731
    assert dot(a, b) > dot(a, c) + 0.2
    assert resp.usage.input_tokens > 10
    bad = mesh.get_llm(EMB).new_embeddings().add_text("x")
    bad.settings["dimensions"] = 10
    with pytest.raises(SettingsError, match="384"):
        bad.execute()


async def test_async_embeddings_match_sync(mesh):
    q = mesh.get_llm(EMB).new_embeddings().add_text("hello world")
    assert (await q.aexecute()).get_embeddings() == q.execute().get_embeddings()


def test_models_load_once_across_threads(llm):
    from langchain_mesh.local.loading import load_causal_lm, packaged_model_path

    got = []
    threads = [threading.Thread(target=lambda: got.append(load_causal_lm(packaged_model_path("SmolLM2-135M-Instruct"))))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(x) for x in got}) == 1


def _random_schema(rng: random.Random, depth: int = 0) -> dict:
    kinds = ["integer", "number", "string", "boolean", "enum"] + (["object", "array"] if depth < 2 else [])
    props = {}
    for i in range(rng.randint(1, 4)):
        kind = rng.choice(kinds)
        name = rng.choice(["city", "count", "flag", "label", "items", "size", "unit", "query"]) + str(i)
        if kind == "enum":
            props[name] = {"type": "string", "enum": rng.sample(["red", "green", "blue", "north", "south"], 3)}
        elif kind == "object":
            props[name] = _random_schema(rng, depth + 1)
        elif kind == "array":
            props[name] = {"type": "array", "items": {"type": rng.choice(["integer", "string"])},
                           "minItems": rng.randint(0, 2)}
        elif kind == "integer" and rng.random() < 0.5:
            props[name] = {"type": "integer", "minimum": 0, "maximum": 100}
        else:
            props[name] = {"type": kind}
    required = [n for n in props if rng.random() < 0.7]
    return {"type": "object", "properties": props, "required": required}


def test_fifty_forced_tool_calls_with_random_schemas_all_validate(llm):
    import jsonschema

    rng = random.Random(1234)
    prompts = ["Look up the weather", "Find me a hotel", "Order some food", "Book a meeting", "Search the docs"]
    for i in range(50):
        schema = _random_schema(rng)
        tool = {"type": "function", "function": {"name": f"tool_{i}", "description": "Do the task", "parameters": schema}}
        q = llm.new_completion().with_message(rng.choice(prompts))
        q.settings.update({"tools": [tool], "toolChoice": {"type": "required"}, "maxOutputTokens": 400})
        resp = q.execute()
        assert resp.finish_reason == "tool_calls", (i, schema, resp.text)
        call = resp.tool_calls[0]
        assert call.function.name == f"tool_{i}"
        jsonschema.validate(json.loads(call.function.arguments), schema)


def test_lean_decoder_matches_transformers(llm):
    """The lean decoder (converted weights on CPU, no transformers) computes what transformers computes:
    same prompt tokens, the same logits to the last bits, the same greedy answer with the guards on. On
    one thread:
    with several, BLAS may split a sum differently for one row than for a whole prompt, and results of
    either implementation move by an ulp between thread counts."""
    import torch

    from langchain_mesh.connections.huggingface_local.connection import _template_stop_ids
    from langchain_mesh.local.generation import GenerationParams, cpu_threads, generate
    from langchain_mesh.local.lean_llama import LeanLlama, LeanTokenizer
    from langchain_mesh.local.loading import LoadedModel, _gguf_cache_for, _load_hf, packaged_model_path

    llm.new_completion().with_message("Hi").execute()  # the converted copy exists from here on
    folder = _gguf_cache_for(packaged_model_path("SmolLM2-135M-Instruct"))
    hf_m, hf_t = _load_hf(folder, "cpu")
    lean = LoadedModel(LeanLlama(folder, lambda: hf_m), LeanTokenizer(folder, lambda: hf_t), "cpu", folder, 8192,
                       None, threading.Lock())
    ref = LoadedModel(hf_m, hf_t, "cpu", folder, 8192, None, threading.Lock())
    assert _template_stop_ids(lean) == _template_stop_ids(ref)
    chat = [{"role": "system", "content": "Answer from the context: a mesh lists its models with list_llms()."},
            {"role": "user", "content": "How do I list the models of a mesh?"}]
    ids = hf_t.apply_chat_template(chat, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
    assert lean.tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=True,
                                              return_dict=True)["input_ids"] == list(ids)
    with torch.inference_mode(), cpu_threads(1):
        a = hf_m(input_ids=torch.tensor([list(ids)]), use_cache=True)
        b = lean.model(input_ids=torch.tensor([list(ids)]))
        # BLAS sums a product in an order that depends on the matrices' shapes (the last prompt row is
        # projected alone here), so values may differ in the last bits; the chosen tokens may not
        assert torch.allclose(a.logits[:, -1:], b.logits, rtol=0, atol=1e-4)
        assert int(a.logits[0, -1].argmax()) == int(b.logits[0, -1].argmax())
        nxt = torch.tensor([[int(a.logits[0, -1].argmax())]])
        c, d = hf_m(input_ids=nxt, use_cache=True, cache=a.cache).logits, lean.model(input_ids=nxt, cache=b.cache).logits
        assert torch.allclose(c, d, rtol=0, atol=1e-4) and int(c.argmax()) == int(d.argmax())
    params = GenerationParams(max_new_tokens=40, repetition_penalty=1.1, loop_ngram=4,
                              stop_token_ids=_template_stop_ids(ref), threads=1)
    answers = [[ev for ev in generate(m, list(ids), params)][-1] for m in (ref, lean)]
    assert answers[0].text == answers[1].text and answers[0].output_tokens == answers[1].output_tokens
    assert lean.tokenizer.hf is hf_t and lean.model.hf is hf_m  # what adapters and fine-tuning are given


def test_warm_answer_does_not_import_transformers(llm):
    """Once the GGUF weights are converted, answering on CPU needs neither transformers nor MiniLM."""
    import os
    import subprocess
    import sys

    llm.new_completion().with_message("Hi").execute()  # converts the weights on first use
    code = ("import sys; from langchain_mesh import Mesh; "
            "r = Mesh().get_llm('huggingfacelocal:local:SmolLM2-135M-Instruct').new_completion()"
            ".with_message('What is the capital of France?').execute(); "
            "print(r.text); assert 'transformers' not in sys.modules, 'transformers was imported'; "
            "assert 'sentence_transformers' not in sys.modules")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Paris" in done.stdout
