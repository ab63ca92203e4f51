"""The `fastdllm` lm-eval backend in this process on the local tasks: accuracy of the shipped
model, agreement with `fastdllm-ray eval`'s own scoring, stop strings, the Monte Carlo
log-likelihood, and refusals that name the field."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from harness_run import ANSWERS_BOUND, GEN_DOCS, MC_DOCS, answers, choices
from lm_eval.api.instance import Instance

from fastdllm_ray.eval import DecodingConfig, run_engine
from fastdllm_ray.lmeval.decode import Job, run_jobs
from fastdllm_ray.lmeval.taskdata import NUM_PROBLEMS, SEED, rows
from fastdllm_ray.params import GenerationParams
from fastdllm_ray.train.data import problems

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def lm():
    from lm_eval.api.registry import get_model

    return get_model("fastdllm").create_from_arg_string("cache=dual,threshold=0.9,mc_num=8,mc_batch_size=8",
                                                        {"batch_size": 8})


def chat(lm, question: str) -> str:
    return lm.apply_chat_template([{"role": "user", "content": question}])


def generate(lm, context: str, **gen_kwargs) -> str:
    [text] = lm.generate_until([Instance("generate_until", {}, (context, gen_kwargs), 0)])
    return text


def test_dual_cache_threshold_answers_and_agrees_with_fastdllm_eval(direct_generation, lm):
    got = answers(direct_generation)
    values = {i: str(p.value) for i, p in enumerate(problems(GEN_DOCS, SEED, "eval"))}
    accuracy = direct_generation["results"]["tiny_arith"]["exact_match,answer"]
    assert len(got) == GEN_DOCS and accuracy == sum(got[i] == values[i] for i in values) / GEN_DOCS
    assert accuracy >= ANSWERS_BOUND
    # `fastdllm-ray eval`'s own path on the same problems and settings scores the same
    mine = run_engine(lm.model, lm.tokenizer, problems(GEN_DOCS, SEED, "eval"), DecodingConfig("dual", "threshold", 32))
    assert mine.correct == round(accuracy * GEN_DOCS)


def test_multiple_choice_by_monte_carlo_likelihood_picks_the_right_answers(direct_choice):
    picked = choices(direct_choice)
    gold = {i: r["gold"] for i, r in enumerate(rows(MC_DOCS))}
    accuracy = direct_choice["results"]["tiny_arith_mc"]["acc,none"]
    assert accuracy == sum(picked[i] == gold[i] for i in gold) / MC_DOCS
    assert accuracy >= 0.75  # chance is 0.25; 8 samples per score on a CPU budget


def test_stop_string_cuts_the_answer_and_aborts_the_rest(lm):
    context = chat(lm, "What is 12+7?")
    assert generate(lm, context, until=["\n\n"], max_gen_toks=64) == "12 + 7 = 19. The answer is 19."
    assert generate(lm, context, until=[" ="], max_gen_toks=64) == "12 + 7"
    # block by block: the stop string shows in the first block, the second is never computed
    ids = lm.tok_encode(context)
    params = GenerationParams(steps=64, gen_length=64, block_length=8, cache="dual", stop_at_eos=False)
    [full, cut] = run_jobs(lm.model, lm.tokenizer, [Job(ids, params), Job(ids, params, (" =",))], max_num_seqs=2)
    assert cut.text == "12 + 7" and full.text.startswith("12 + 7 = 19.")
    assert len(cut.token_ids) == 8 and cut.nfe < full.nfe


def test_loglikelihood_prefers_the_right_answer_and_is_reproducible(lm):
    context = chat(lm, "What is 12+7?")
    requests = [Instance("loglikelihood", {}, (context, answer), i)
                for i, answer in enumerate(["12 + 7 = 19. The answer is 19.", "12 + 7 = 18. The answer is 18."])]
    (right, _), (wrong, _) = lm.loglikelihood(requests)
    assert wrong < right < 0
    assert [score for score, _ in lm.loglikelihood(requests)] == [right, wrong]  # same maskings every time


def llada_greedy(model, prefix: list[int], n: int) -> list[int]:
    """LLaDA's greedy check, written out: n masks after the prefix, and at each of n full
    forwards the single most confident masked position is committed (the mask token itself is
    never a prediction, as in the engine)."""
    mask = model.config.mask_token_id
    seq = torch.tensor([prefix + [mask] * n])
    for _ in range(n):
        logits = model(seq)[0].double()
        logits[:, mask] = -torch.inf
        confidence, prediction = torch.softmax(logits, -1).max(-1)
        confidence[seq[0] != mask] = -1.0
        i = int(confidence.argmax())
        seq[0, i] = prediction[i]
    return seq[0, len(prefix):].tolist()


def test_greedy_check_matches_llada_one_token_per_step_decoding(lm):
    prefix = lm.tok_encode(chat(lm, "What is 12+7?"))
    right = lm.tok_encode("12 + 7 = 19. The answer is 19.", add_special_tokens=False)
    greedy = llada_greedy(lm.model, prefix, len(right))
    assert lm._greedy_matches([(prefix, greedy), (prefix, right)]) == [True, greedy == right]
    # off (the default, as in LLaDA's evaluation): is_greedy is always False
    assert [g for _, g in lm.loglikelihood([Instance("loglikelihood", {}, ("Hi", " there"), 0)])] == [False]


def test_perplexity_requests_are_refused_with_the_reason(lm):
    with pytest.raises(NotImplementedError, match="left-to-right"):
        lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, ("text",), 0)])


@pytest.mark.parametrize("arg_string, field", [
    ("cache=full", "cache"), ("threshold=1.5", "threshold"), ("steps=2.5", "steps"), ("use_cache=maybe", "use_cache"),
    ("cache=dual,use_dual_cache=False", "cache"), ("mc_num=10,mc_batch_size=4", "mc_num"), ("temprature=0.5", "model_args"),
])
def test_bad_model_args_are_refused_naming_the_field(arg_string, field):
    from lm_eval.api.registry import get_model

    with pytest.raises(ValueError, match=f"^{field}"):
        get_model("fastdllm").create_from_arg_string(arg_string)


def test_unsupported_generation_setting_is_refused_naming_it(lm):
    with pytest.raises(ValueError, match="repetition_penalty"):
        generate(lm, "What is 1+1?", until=["\n\n"], repetition_penalty=1.2)
    with pytest.raises(ValueError, match="^sub_block_length: applies to Fast-dLLM v2"):  # another family's field
        generate(lm, "What is 1+1?", until=["\n\n"], sub_block_length=8)


def test_a_fresh_interpreter_finds_the_backend_by_name_next_to_lm_evals_own():
    # what `lm_eval --model fastdllm` and `accelerate launch -m lm_eval` do: look the name up in
    # lm-eval's registry in a new process, where only the installed .pth hook can have put it
    code = ("from lm_eval.api.registry import get_model, model_registry; cls = get_model('fastdllm'); "
            "print(cls.__module__, cls.__name__, 'hf' in model_registry, 'local-completions' in model_registry)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split() == ["fastdllm_ray.lmeval.backend", "FastDLLMLM", "True", "True"]


def test_shipped_task_data_is_the_held_out_problems_with_one_right_choice():
    from fastdllm_ray.lmeval.taskdata import DATA_FILE, SEED
    from fastdllm_ray.train.data import problems, split_of

    shipped = [json.loads(line) for line in DATA_FILE.read_text().splitlines()]
    assert shipped == rows() and len(shipped) == NUM_PROBLEMS  # regenerated: `python -m fastdllm_ray.lmeval.taskdata`
    held_out = {p.question: p for p in problems(NUM_PROBLEMS, SEED, "eval")}
    for row in shipped:  # a sum or difference is held out by its arithmetic, any other problem by its text
        assert split_of(held_out[row["question"]].split_key) == "eval"
        assert row["choices"][row["gold"]] == row["answer"] and len(set(row["choices"])) == 4
    assert len({row["gold"] for row in shipped}) == 4  # the right answer is not always in one place
