"""Dream's decoding rules where the reference vectors do not reach: fields that belong to the
other family are refused by name, a model that ranks the mask token first still finishes,
sampling and the threshold-without-a-cache schedule behave as documented."""

from __future__ import annotations

import pytest
import torch

from fastdllm_ray import GenerationParams, generate, load_model
from fastdllm_ray.decoding.dream import scheduled_count
from tests.conftest import DREAM_CHECKPOINT
from tests.engine.test_mask_never_predicted import MaskFirstModel

PROMPT = [303, 216, 388, 336, 464, 440, 259, 348]


@pytest.mark.parametrize("field,changes", [
    ("remasking", dict(remasking="random")),
    ("factor", dict(factor=1.0)),
    ("threshold", dict(alg="entropy", threshold=0.5)),
])
def test_llada_fields_on_dream_are_refused_by_name(dream_model, field, changes):
    with pytest.raises(ValueError, match=f"^{field}:"):
        generate(dream_model, [PROMPT], GenerationParams(gen_length=16, block_length=8, steps=4, **changes))


def test_alg_on_llada_is_refused_by_name(ref_model):
    with pytest.raises(ValueError, match="^alg:"):
        generate(ref_model, [[1, 2, 3]], GenerationParams(gen_length=16, block_length=8, steps=4, alg="entropy"))


def test_unknown_alg_is_refused_by_name():
    with pytest.raises(ValueError, match="^alg:"):
        GenerationParams(alg="origin")


class DreamMaskFirst(MaskFirstModel):
    def __init__(self) -> None:
        torch.nn.Module.__init__(self)
        self.inner = load_model(DREAM_CHECKPOINT)
        self.config = self.inner.config
        self.end_token_ids = ()


@pytest.mark.parametrize("cache,alg,narrowed", [
    ("none", "entropy", {}), ("dual", "confidence_threshold", {}), ("prefix", "topk_margin", {}),
    ("none", "confidence_threshold", {}),
    # a cut that leaves only the mask token: the best token it cut is the answer
    ("dual", "entropy", dict(top_k=1)), ("none", "maskgit_plus", dict(top_p=0.5)),
    ("dual", "maskgit_plus", dict(top_k=1, temperature=0.8)),
])
def test_dream_never_commits_the_mask_and_finishes(cache, alg, narrowed):
    model = DreamMaskFirst()
    params = GenerationParams(gen_length=16, block_length=8, steps=8, alg=alg, cache=cache, stop_at_eos=False,
                              **narrowed)
    result = generate(model, [PROMPT], params)[0]
    assert len(result.token_ids) == 16 and model.config.mask_token_id not in result.token_ids
    assert result.finish_reason == "length"


def test_threshold_without_cache_commits_steps_many_on_average_and_may_run_longer(dream_model):
    # threshold 1.0: only the most confident position of each step commits, so every step
    # leaves the rest of its share to the next and the loop runs one step per position
    params = GenerationParams(gen_length=16, steps=4, threshold=1.0, cache="none", stop_at_eos=False)
    result = generate(dream_model, [PROMPT], params)[0]
    assert result.nfe == 16 and dream_model.config.mask_token_id not in result.token_ids


def test_sampling_is_seeded_and_differs_from_greedy(dream_model):
    settings = dict(gen_length=16, block_length=8, steps=8, alg="maskgit_plus", cache="dual", stop_at_eos=False)
    a = generate(dream_model, [PROMPT], GenerationParams(temperature=1.5, **settings), seed=3)[0]
    b = generate(dream_model, [PROMPT], GenerationParams(temperature=1.5, **settings), seed=3)[0]
    greedy = generate(dream_model, [PROMPT], GenerationParams(**settings))[0]
    assert a.token_ids == b.token_ids != greedy.token_ids


def test_schedule_commits_the_float32_share_and_all_on_the_last_step():
    # 32 masks over 32 steps: the first step's share 32 * (1 - t1/t0) = 0.999 rounds down
    assert [scheduled_count(32, 0, 32), scheduled_count(32, 1, 32), scheduled_count(5, 31, 32)] == [0, 1, 5]

