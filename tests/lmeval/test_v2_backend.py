"""`lm_eval --model fastdllm` on a Fast-dLLM v2 checkpoint: generate_until decodes with v2's
settings (sub_block_length, block_cache, threshold; no `steps`) what the engine decodes alone,
LLaDA-only settings are refused by name, and loglikelihood says it is not available."""

from __future__ import annotations

import pytest
from lm_eval.api.instance import Instance
from lm_eval.api.registry import get_model

from fastdllm_ray import GenerationParams, generate
from tests.conftest import TINY_V2

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def lm():
    args = f"pretrained={TINY_V2},threshold=0.9,sub_block_length=8,block_cache=True"
    return get_model("fastdllm").create_from_arg_string(args, {"batch_size": 4})


def test_generate_until_decodes_what_the_engine_does_with_v2_settings(lm):
    contexts = [lm.apply_chat_template([{"role": "user", "content": q}]) for q in ("What is 2+2?", "Count to 3.")]
    texts = lm.generate_until([Instance("generate_until", {}, (c, {"max_gen_toks": 64, "until": ["\n\n\n"]}), i)
                               for i, c in enumerate(contexts)])
    params = GenerationParams(gen_length=64, threshold=0.9, sub_block_length=8, block_cache=True)
    alone = generate(lm.model, [lm.tok_encode(c) for c in contexts], params)
    assert texts == [lm.tok_decode(r.token_ids).split("\n\n\n")[0] for r in alone]


def test_settings_of_other_families_are_refused_by_name(lm):
    request = Instance("generate_until", {}, ("Hi", {"max_gen_toks": 64, "use_cache": False}), 0)
    with pytest.raises(ValueError, match="^cache:"):
        lm.generate_until([request])


def test_loglikelihood_is_refused_with_the_reason(lm):
    with pytest.raises(NotImplementedError, match="block diffusion"):
        lm.loglikelihood([Instance("loglikelihood", {}, ("Hi", " there"), 0)])
