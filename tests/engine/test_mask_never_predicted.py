"""A model that ranks the mask token first must not stall a request: a committed mask would
stay masked and its block never complete. The mask is left out of the prediction."""

from __future__ import annotations

import pytest
import torch

from fastdllm_ray import GenerationParams, generate, load_model
from fastdllm_ray.decoding import RULE_FIXED, StepRules, predict
from tests.conftest import REF_CHECKPOINT


class MaskFirstModel(torch.nn.Module):
    """The reference checkpoint with the mask token's logit raised above every other."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = load_model(REF_CHECKPOINT)
        self.config = self.inner.config
        self.end_token_ids = ()

    device = property(lambda self: self.inner.device)
    dtype = property(lambda self: self.inner.dtype)

    def hidden_states(self, *args, **kwargs):
        return self.inner.hidden_states(*args, **kwargs)

    def logits(self, hidden):
        logits = self.inner.logits(hidden)
        logits[..., self.config.mask_token_id] += 1e4
        return logits


def test_predict_skips_the_mask_token_but_keeps_its_probability_mass():
    logits = torch.tensor([[[0.0, 5.0, 1.0, 9.0]]])  # the mask (id 3) is the argmax
    rules = StepRules(rule=torch.tensor([RULE_FIXED]), fixed_count=torch.tensor([1]),
                      threshold=torch.ones(1, dtype=torch.float64), factor=torch.ones(1, dtype=torch.float64),
                      temperature=torch.zeros(1, dtype=torch.float64), random_remasking=torch.zeros(1, dtype=torch.bool),
                      any_sampling=False, any_random=False)
    x0, confidence = predict(logits, rules, mask_id=3)
    assert x0.tolist() == [[1]]
    expected = torch.softmax(logits.double(), -1)[0, 0, 1]
    assert confidence[0, 0].item() == pytest.approx(expected.item())
    assert logits[0, 0, 3].item() == 9.0  # restored


@pytest.mark.parametrize("cache", ["none", "prefix", "dual"])
@pytest.mark.parametrize("rule", [{}, {"threshold": 0.9}, {"factor": 1.0}])
def test_generation_ends_without_mask_ids_when_the_model_prefers_the_mask(cache, rule):
    model = MaskFirstModel()
    params = GenerationParams(steps=16, gen_length=16, block_length=8, cache=cache, stop_at_eos=False, **rule)
    [result] = generate(model, [[5, 17, 42, 7]], params)
    assert len(result.token_ids) == 16
    assert model.config.mask_token_id not in result.token_ids
    assert result.nfe <= 16
