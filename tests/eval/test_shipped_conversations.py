"""Every shipped model holds a conversation: held-out chats of three turns (problems and
phrasings never in training), each turn asked with the model's own earlier answers in the
history and scored against the conversation's arithmetic, under the server's defaults and
under the family's fast setting; and single questions as well (the full tables, 500 problems
and 200 conversations: BENCHMARKS.md `eval`)."""

from __future__ import annotations

import math
import pytest

from fastdllm_ray.eval import DecodingConfig
from fastdllm_ray.eval.run import engine_replies, run_engine
from fastdllm_ray.eval.turns import run_turns
from fastdllm_ray.model import load_model, load_tokenizer
from fastdllm_ray.model.shipped import DEFAULT_MODEL_NAME, SHIPPED_MODELS, shipped_model_path
from fastdllm_ray.train.chats import chats
from fastdllm_ray.train.data import problems

NUM_CHATS, TURNS, NUM_PROBLEMS = 24, 3, 40
PROMISED = 0.95  # per turn, on the full table's conversations
# the lowest sample accuracy still consistent with PROMISED at 99% (one-sided normal bound)
BOUND = PROMISED - 2.33 * math.sqrt(PROMISED * (1 - PROMISED) / NUM_CHATS)

# (the server's defaults, the fast setting) of each family's tiny model, once it ships
SETTINGS = {
    "tiny-llada-arith": [DecodingConfig("dual", "fixed", 32), DecodingConfig("dual", "threshold", 32)],
    "tiny-dream-arith": [DecodingConfig("dual", "fixed", 32, alg="entropy"),
                         DecodingConfig("dual", "threshold", 32, alg="confidence_threshold")],
    "tiny-v2-arith": [DecodingConfig("block", "threshold", 32, threshold=1.0),
                      DecodingConfig("block", "threshold", 32, threshold=0.9)],
}


@pytest.fixture(scope="module", params=[name for name in SETTINGS if name in SHIPPED_MODELS])
def shipped(request):
    path = shipped_model_path(request.param)
    return request.param, load_model(path), load_tokenizer(path)


def test_every_turn_of_held_out_conversations_is_answered(shipped):
    name, model, tokenizer = shipped
    held_out = chats(NUM_CHATS, 1234, "eval", TURNS)

    def replier(conversations, config, progress):
        return engine_replies(model, tokenizer, conversations, config, batch_size=NUM_CHATS)

    for config in SETTINGS[name]:
        per_turn = run_turns(replier, held_out, config)
        assert len(per_turn) == TURNS
        for turn, result in enumerate(per_turn, 1):
            assert result.accuracy >= BOUND, (name, config.name, turn, result.failures[:3])


def test_single_questions_are_answered_with_fewer_forwards_at_the_fast_setting(shipped):
    name, model, tokenizer = shipped
    if name == DEFAULT_MODEL_NAME:
        pytest.skip("the default model's single questions: tests/eval/test_shipped_model_eval.py")
    held_out = problems(NUM_PROBLEMS, 1234, "eval")
    default, fast = (run_engine(model, tokenizer, held_out, c, batch_size=NUM_PROBLEMS) for c in SETTINGS[name])
    assert default.accuracy >= BOUND and fast.accuracy >= BOUND, (name, default.failures[:3], fast.failures[:3])
    assert fast.nfe < default.nfe
