"""The embedded tiny Dream checkpoint loads like a real one: the network from config.json, the
tokenizer and ChatML chat template from its tokenizer files, <|im_end|> and <|endoftext|> as
end tokens; a chat prompt decodes to the end through the engine."""

from __future__ import annotations

from fastdllm_ray import GenerationParams, generate
from fastdllm_ray.model import DreamModel, load_model, load_tokenizer
from tests.conftest import TINY_DREAM


def test_tiny_dream_loads_with_its_chat_template_and_end_tokens():
    model = load_model(TINY_DREAM)
    tokenizer = load_tokenizer(TINY_DREAM)
    assert isinstance(model, DreamModel)
    text = tokenizer.apply_chat_template([{"role": "user", "content": "2+2?"}], tokenize=False,
                                         add_generation_prompt=True)
    assert text == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                    "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n")
    ends = {tokenizer.convert_ids_to_tokens(i) for i in model.end_token_ids}
    assert ends == {"<|endoftext|>", "<|im_end|>"}
    assert tokenizer.convert_ids_to_tokens(model.config.mask_token_id) == "<|mask|>"
    prompt = tokenizer(text, add_special_tokens=False)["input_ids"]
    result = generate(model, [prompt], GenerationParams(gen_length=16, block_length=8, steps=8, stop_at_eos=False))[0]
    assert len(result.token_ids) == 16 and model.config.mask_token_id not in result.token_ids
