"""The lm-evaluation-harness backend, run through the real harness on local tasks.

Every number the harness gets from us is checked against log-softmax sums computed here from
``Model.logits`` of the whole sequence (and generations against a greedy loop over Model.logits),
never against the backend's own helpers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # local JSON files only, never the hub
lm_eval = pytest.importorskip("lm_eval")

import bitnet
from bitnet.api import default_model_path
from bitnet.eval import evaluate, rolling_windows
from bitnet.eval.__main__ import harness_argv
from bitnet.eval._session import Cursor
from bitnet.eval.harness import BitnetLM

QUESTIONS = [
    {
        "question": "In the beginning God created the",
        "choices": ["heaven and the earth.", "fox and the dog.", "numbers", "heaven"],
        "answer": 0,
    },
    {
        "question": "And the earth was without form, and",
        "choices": ["void; and darkness was upon the face of the deep.", "blue.", "happy"],
        "answer": 0,
    },
    {
        "question": "And God said, Let there be",
        "choices": ["light: and there was light.", "a quick brown fox.", "light"],
        "answer": 0,
    },
]
PASSAGES = [
    {
        "text": "And God saw the light, that it was good: and God divided the light from the darkness."
    },
    {"text": "And the evening and the morning were the first day. " * 12},
]


@pytest.fixture(scope="module")
def model() -> bitnet.Model:
    path = default_model_path()
    assert path is not None
    return bitnet.load(path, progress=False)


def write_task(root: Path, name: str, rows: list[dict[str, object]], spec: str) -> None:
    data = root / f"{name}.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / f"{name}.yaml").write_text(
        f"task: {name}\n"
        "dataset_path: json\n"
        "dataset_kwargs:\n"
        "  data_files:\n"
        f"    test: {data}\n"
        "test_split: test\n" + spec
    )


MC_SPEC = """output_type: multiple_choice
doc_to_text: "Question: {{question}}\\nAnswer:"
doc_to_choice: "{{choices}}"
doc_to_target: "{{answer}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""
ROLLING_SPEC = """output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{text}}"
metric_list:
  - metric: word_perplexity
  - metric: byte_perplexity
  - metric: bits_per_byte
"""


def run_harness(lm: BitnetLM, root: Path, tasks: list[str], **kwargs: object) -> dict:
    from lm_eval.tasks import TaskManager

    return lm_eval.simple_evaluate(
        model=lm,
        tasks=tasks,
        # Only our tasks: indexing the harness's thousands of task files takes ~20 s.
        task_manager=TaskManager(include_path=str(root), include_defaults=False),
        log_samples=True,
        bootstrap_iters=0,
        **kwargs,
    )


def reference_loglikelihood(model: bitnet.Model, context: str, continuation: str):
    """(sum of log p, greedy) from one Model.logits pass over the whole sequence, encoding the
    pair as the harness's causal models do (trailing context spaces move to the continuation)."""
    n_space = len(context) - len(context.rstrip())
    if n_space:
        context, continuation = context[:-n_space], context[-n_space:] + continuation
    ctx = model.tokenize(context)
    whole = model.tokenize(context + continuation)
    logits = model.logits(whole[:-1]).astype(np.float64)
    total, greedy = 0.0, True
    for pos in range(len(ctx) - 1, len(whole) - 1):
        row = logits[pos]
        lse = np.log(np.exp(row - row.max()).sum()) + row.max()
        total += row[whole[pos + 1]] - lse
        greedy = greedy and int(row.argmax()) == whole[pos + 1]
    return total, greedy


def test_multiple_choice_loglikelihoods_equal_logits(model, tmp_path):
    write_task(tmp_path, "bitnet_mc", QUESTIONS, MC_SPEC)
    out = run_harness(BitnetLM(model), tmp_path, ["bitnet_mc"], num_fewshot=1)
    samples = out["samples"]["bitnet_mc"]
    assert len(samples) == len(QUESTIONS) - 0  # one per document
    correct = 0
    for s in samples:
        lls = []
        for args, resp in zip(s["arguments"], s["resps"], strict=True):
            context, continuation = args
            assert context.count("Question:") == 2  # the few-shot example shares the prefix
            expected, greedy = reference_loglikelihood(model, context, continuation)
            got, got_greedy = resp[0]
            assert float(got) == pytest.approx(expected, abs=2e-4 * (1 + abs(expected)))
            assert got_greedy == greedy
            lls.append(expected)
        correct += int(np.argmax(lls) == s["target"])
    assert out["results"]["bitnet_mc"]["acc,none"] == pytest.approx(correct / len(samples))


def test_scoring_reuses_the_shared_context(model, monkeypatch):
    """Choices of one question compute the shared context once: the session ends up holding
    the last-scored sequence, and scoring the same requests again gives the same numbers."""
    from bitnet.eval import score_continuations

    ctx = model.tokenize("And God called the light Day, and the darkness he called")
    conts = [model.tokenize(c, add_bos=False) for c in (" Night.", " day", " evening and")]
    first = score_continuations(model, [(ctx, c) for c in conts])
    again = score_continuations(model, [(ctx, c) for c in reversed(conts)])
    assert [s.logprob for s in first] == [s.logprob for s in reversed(again)]
    # The context is computed once: the first request feeds it (less the position that
    # predicts the continuation's first token), every request then its own continuation.
    fed: list[int] = []
    decode = Cursor._decode

    def spy(self, tokens, logits):
        fed.append(len(tokens))
        return decode(self, tokens, logits)

    monkeypatch.setattr(Cursor, "_decode", spy)
    third = score_continuations(model, [(ctx, c) for c in conts])
    assert [s.logprob for s in third] == [s.logprob for s in first]
    assert sum(fed) == len(ctx) - 1 + sum(len(c) for c in conts)
    for c, s in zip(conts, first, strict=True):
        logits = model.logits(ctx + c[:-1]).astype(np.float64)
        rows = logits[len(ctx) - 1 :]
        lse = np.log(np.exp(rows - rows.max(1, keepdims=True)).sum(1)) + rows.max(1)
        assert s.logprob == pytest.approx(float((rows[np.arange(len(c)), c] - lse).sum()), abs=1e-3)


def test_loglikelihood_rolling_equals_perplexity_total(model, tmp_path):
    write_task(tmp_path, "bitnet_rolling", PASSAGES[:1], ROLLING_SPEC)
    out = run_harness(BitnetLM(model), tmp_path, ["bitnet_rolling"])
    (sample,) = out["samples"]["bitnet_rolling"]
    text = PASSAGES[0]["text"]
    ppl = bitnet.eval.perplexity(model, text)  # BOS + the text, every token scored once
    assert ppl.n_scored == len(model.tokenize(text)) - 1
    assert float(sample["resps"][0][0]) == pytest.approx(-ppl.nll_sum, rel=1e-5)


def test_loglikelihood_rolling_beyond_the_context(tmp_path):
    """A text longer than the context: the harness's own window scheme, from Model.logits."""
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

    path = default_model_path()
    small = bitnet.load(path, n_ctx=32, progress=False)
    write_task(tmp_path, "bitnet_rolling_long", PASSAGES[1:], ROLLING_SPEC)
    out = run_harness(BitnetLM(small), tmp_path, ["bitnet_rolling_long"])
    (sample,) = out["samples"]["bitnet_rolling_long"]
    tokens = small.tokenize(PASSAGES[1]["text"], add_bos=False)
    assert len(tokens) > 3 * 32
    total = 0.0
    windows = get_rolling_token_windows(tokens, small.tokenizer.bos_id, 32, 1)
    for context, pred in map(make_disjoint_window, windows):
        seq = context + pred
        logits = small.logits(seq[:-1]).astype(np.float64)[-len(pred) :]
        lse = np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1)) + logits.max(1)
        total += float((logits[np.arange(len(pred)), pred] - lse).sum())
    assert float(sample["resps"][0][0]) == pytest.approx(total, rel=1e-5)


@pytest.mark.parametrize("n", [1, 2, 5, 31, 32, 33, 64, 65, 100])
@pytest.mark.parametrize("max_len", [1, 2, 8, 32])
def test_rolling_windows_are_the_harness_windows(n, max_len):
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

    tokens = list(range(10, 10 + n))
    expected = [
        (list(a), list(b))
        for a, b in map(make_disjoint_window, get_rolling_token_windows(tokens, 7, max_len, 1))
    ]
    assert rolling_windows(tokens, 7, max_len) == expected


def greedy_tokens(model: bitnet.Model, prompt: list[int], n: int) -> list[int]:
    seq = list(prompt)
    for _ in range(n):
        nxt = int(model.logits(seq)[-1].argmax())
        if nxt in model.tokenizer.eos_ids:
            break
        seq.append(nxt)
    return seq[len(prompt) :]


def greedy_text(model: bitnet.Model, prompt: str, n: int) -> str:
    """The text greedy decoding adds after the prompt (a leading space included)."""
    ids = model.tokenize(prompt)
    head = model.detokenize(ids)
    whole = model.detokenize(ids + greedy_tokens(model, ids, n))
    assert whole.startswith(head)
    return whole[len(head) :]


def test_generate_until_honours_stop_strings_and_max_gen_toks(model, tmp_path, monkeypatch):
    prompts = [
        "And God said, Let there be light",
        "In the beginning God created",
        "And the evening and the morning were",
    ]
    frees = [greedy_text(model, p, 24) for p in prompts]
    words = frees[0].split()
    assert len(words) >= 4, frees[0]
    stop = " " + words[2]  # ends the first text in the middle of what greedy decoding writes
    cuts = [f[: f.index(stop)] if stop in f else f for f in frees]
    rows = [{"prompt": p} for p in prompts]
    spec = (
        "output_type: generate_until\n"
        'doc_to_text: "{{prompt}}"\n'
        'doc_to_target: ""\n'
        "generation_kwargs:\n"
        f"  until: [{json.dumps(stop)}]\n"
        "  max_gen_toks: 24\n"
        "  do_sample: false\n"
        "metric_list:\n  - metric: exact_match\n"
    )
    write_task(tmp_path, "bitnet_gen", rows, spec)
    spec_short = spec.replace(f"[{json.dumps(stop)}]", "[]").replace("24", "3")
    write_task(tmp_path, "bitnet_gen_short", rows, spec_short)
    batches: list[int] = []
    generate_batch = bitnet.Model.generate_batch

    def spy(self, prompts, **options):
        batches.append(len(prompts))
        return generate_batch(self, prompts, **options)

    monkeypatch.setattr(bitnet.Model, "generate_batch", spy)
    out = run_harness(BitnetLM(model), tmp_path, ["bitnet_gen", "bitnet_gen_short"])
    assert batches == [3, 3]  # each task's requests run as one batch on the engine
    got = {s["doc"]["prompt"]: s["resps"][0][0] for s in out["samples"]["bitnet_gen"]}
    assert got == dict(zip(prompts, cuts, strict=True))
    assert frees[0] != cuts[0]
    got = {s["doc"]["prompt"]: s["resps"][0][0] for s in out["samples"]["bitnet_gen_short"]}
    shorts = [greedy_text(model, p, 3) for p in prompts]
    assert got == dict(zip(prompts, shorts, strict=True))


def test_evaluate_from_python(model, tmp_path):
    write_task(tmp_path, "bitnet_mc_py", QUESTIONS, MC_SPEC)
    out = evaluate(
        model,
        tasks=["bitnet_mc_py"],
        include_path=str(tmp_path),
        include_defaults=False,
        limit=2,
        bootstrap_iters=0,
    )
    assert 0.0 <= out["results"]["bitnet_mc_py"]["acc,none"] <= 1.0


def test_bad_model_args(model):
    with pytest.raises(bitnet.eval.harness.ParameterError, match="unknown bitnet model_args"):
        BitnetLM(model, temperature=1)
    with pytest.raises(bitnet.eval.harness.ParameterError, match="model=FILE_OR_NAME"):
        BitnetLM()
    with pytest.raises(bitnet.eval.harness.ParameterError, match="n_threads"):
        BitnetLM(model, n_threads=2)


def test_harness_argv():
    assert harness_argv(["--tasks", "x"]) == ["--model", "bitnet", "--tasks", "x"]
    assert harness_argv(["run", "--tasks", "x"]) == ["run", "--model", "bitnet", "--tasks", "x"]
    assert harness_argv(["--model", "hf", "--tasks", "x"]) == ["--model", "hf", "--tasks", "x"]
    assert harness_argv(["ls", "tasks"]) == ["ls", "tasks"]
    assert harness_argv(["--help"]) == ["--help"]


def test_command_line_runs_the_harness(tmp_path):
    """`bitnet eval ARGS` = `python -m bitnet.eval ARGS` = lm-eval's CLI with our backend."""
    write_task(tmp_path, "bitnet_mc_cli", QUESTIONS, MC_SPEC)
    path = default_model_path()
    env = dict(os.environ, HF_DATASETS_OFFLINE="1")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "bitnet.cli",
            "eval",
            "--model_args",
            f"model={path},n_threads=1",
            "--tasks",
            "bitnet_mc_cli",
            "--include_path",
            str(tmp_path),
        ],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "bitnet_mc_cli" in r.stdout and "acc" in r.stdout


def test_entry_point_names_the_backend():
    from importlib.metadata import entry_points

    (ep,) = [e for e in entry_points(group="lm_eval.models") if e.name == "bitnet"]
    assert ep.load() is BitnetLM
