"""Loop control for local models: the LoopGuard and repetition penalty defaults, the chat template's
turn markers as stops, and the settings that override them (settings.extra)."""

from __future__ import annotations

import collections

import pytest

from langchain_mesh.local.generation import LoopGuard, StopMatcher


def _max_4gram(text: str) -> int:
    w = text.split()
    return max(collections.Counter(tuple(w[i:i + 4]) for i in range(len(w) - 3)).values(), default=0)


def _stream_through(text: str, n: int = 4) -> tuple[str, int | None]:
    """Feed ``text`` one character at a time as the decoder does; return (emitted, cut)."""
    guard, stop, emitted = LoopGuard(n), StopMatcher([]), ""
    for i in range(1, len(text) + 1):
        cut = guard.feed(text[:i])
        if cut is not None:
            return emitted + text[stop.emitted:cut], cut
        out, _ = stop.feed(text[:i], LoopGuard.safe_end(text[:i]))
        emitted += out
    cut = guard.feed(text, final=True)
    return emitted + text[stop.emitted:cut if cut is not None else len(text)], cut


def test_loop_guard_cuts_before_a_third_occurrence():
    looping = "Run python3 -m mesh -h -m -l -m -l -m -l -m -l -m -l -m -l"
    emitted, cut = _stream_through(looping)
    assert cut is not None
    assert emitted == looping[:cut] and emitted.startswith("Run python3 -m mesh -h")
    assert _max_4gram(emitted) <= 2 and _max_4gram(looping) > 2


def test_loop_guard_leaves_ordinary_text_alone():
    text = "A mesh lists its models with list_llms. Pass a purpose to list the embedding models only."
    assert _stream_through(text) == (text, None)


def test_loop_guard_checks_the_last_word_at_the_end():
    text = "a b c d a b c d a b c d"  # the third "a b c d" completes only with the final word
    emitted, cut = _stream_through(text)
    assert cut is not None and _max_4gram(emitted) == 2


def test_stop_matcher_limit_holds_back_the_word_being_written():
    m = StopMatcher([])
    assert m.feed("hello wor", limit=LoopGuard.safe_end("hello wor")) == ("hello ", False)
    assert m.feed("hello world ", limit=LoopGuard.safe_end("hello world ")) == ("world ", False)


# ---- on the real embedded model ---------------------------------------------------------------------

CHAT = "huggingfacelocal:local:SmolLM2-135M-Instruct"
QUESTION = [
    ("system", "Answer the question using only the context below. Be brief.\n\nContext:\n"
               "- Every model in a mesh is reached by one id: <connection type>:<connection name>:<model>. "
               "`mesh models --purpose TEXT_EMBEDDING_EXTRACTION` lists the embedding models."),
    ("user", "How do I list the embedding models of a mesh?"),
]


def _answer(extra=None, max_tokens=160):
    from langchain_mesh import Mesh

    c = Mesh().get_llm(CHAT).new_completion()
    for role, text in QUESTION:
        c.with_message(text, role=role)
    c.settings["temperature"] = 0
    c.settings["maxOutputTokens"] = max_tokens
    if extra is not None:
        c.settings["extra"] = extra
    return c.execute()


@pytest.mark.local_model
def test_the_main_job_question_no_longer_loops():
    guarded = _answer()
    assert guarded.success and guarded.text.strip()
    assert _max_4gram(guarded.text) <= 2, guarded.text
    assert guarded.finish_reason == "stop"


@pytest.mark.local_model
def test_the_guards_can_be_turned_off_per_request():
    off = _answer({"repetition_penalty": 1.0, "loop_ngram": 0}, max_tokens=120)
    assert off.finish_reason == "length"  # the bare model runs to the budget...
    assert _max_4gram(off.text) > 2, off.text  # ...repeating itself


@pytest.mark.local_model
def test_unknown_or_out_of_range_extra_settings_are_refused():
    from langchain_mesh.errors import SettingsError

    with pytest.raises(SettingsError, match="no setting 'no_repeat_ngram_size'.*loop_ngram, repetition_penalty"):
        _answer({"no_repeat_ngram_size": 3})
    with pytest.raises(SettingsError, match=r"repetition_penalty'\] must be a number in \[1.0, 3.0\]"):
        _answer({"repetition_penalty": 0.5})


@pytest.mark.local_model
def test_the_chat_templates_turn_markers_stop_generation():
    from langchain_mesh import Mesh
    from langchain_mesh.connections.huggingface_local.connection import _template_stop_ids

    lm = Mesh().connection("local")._chat_model("SmolLM2-135M-Instruct")
    ids = _template_stop_ids(lm)
    names = {lm.tokenizer.convert_ids_to_tokens(i) for i in ids}
    assert {"<|im_start|>", "<|im_end|>"} <= names


@pytest.mark.local_model
def test_cpu_generation_runs_on_the_configured_threads_and_restores_torchs():
    """A CPU generation reads the prompt on torch's own threads and runs every one-token step after it
    (forward pass and logits work) on the connection's ``threads``; torch's process-wide setting is back
    afterwards, also when the caller stops early."""
    import torch

    from langchain_mesh import Mesh
    from langchain_mesh.local.generation import GenerationParams, cpu_threads, generate

    lm = Mesh().connection("local")._chat_model("SmolLM2-135M-Instruct")
    if str(lm.device) != "cpu":
        pytest.skip("thread control applies on CPU")
    seen = []

    class Spy:  # a constraint that only watches: apply() runs inside each step
        def apply(self, logits):
            seen.append(torch.get_num_threads())

        def advance(self, token_id):
            pass

        def is_stopped(self):
            return False

    before = torch.get_num_threads()
    ids = lm.tokenizer.apply_chat_template([{"role": "user", "content": "Count to ten."}], add_generation_prompt=True,
                                           tokenize=True, return_dict=True)["input_ids"]
    list(generate(lm, list(ids), GenerationParams(max_new_tokens=4, threads=1), Spy()))
    assert len(seen) == 4 and seen[0] == before and set(seen[1:]) == {1}
    assert torch.get_num_threads() == before
    stream = generate(lm, list(ids), GenerationParams(max_new_tokens=40, threads=1))
    next(stream)
    stream.close()
    assert torch.get_num_threads() == before
    with cpu_threads(None):  # None leaves torch alone
        assert torch.get_num_threads() == before
