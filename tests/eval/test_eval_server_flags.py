"""`fastdllm-ray eval` takes the Fast-dLLM server evaluation script's flags: they select one
configuration instead of the grid, and with --tasks they become the lm-eval run's settings
(model_args of the fastdllm backend, or extra body fields through a server)."""

from __future__ import annotations

import pytest

from fastdllm_ray.cli import build_parser
from fastdllm_ray.commands.eval import flag_config
from fastdllm_ray.eval.configs import DecodingConfig
from fastdllm_ray.lmeval.handoff import harness_settings
from fastdllm_ray.lmeval.settings import parse_model_args


def args_of(*flags: str):
    return build_parser().parse_args(["eval", *flags])


@pytest.mark.parametrize("flags, expected", [
    ([], None),
    (["--no-cache", "--steps", "64"], DecodingConfig("none", "fixed", 32, steps=64)),
    (["--use-cache", "--no-dual-cache", "--factor", "2.0", "--steps", "256"],
     DecodingConfig("prefix", "factor", 32, factor=2.0, steps=256)),
    (["--use-cache", "--use-dual-cache", "--threshold", "0.8"], DecodingConfig("dual", "threshold", 32, threshold=0.8)),
    (["--use-dual-cache", "--block-length", "16"], DecodingConfig("dual", "fixed", 16)),
])
def test_server_script_flags_select_one_configuration(flags, expected):
    assert flag_config(args_of(*flags)) == expected


def test_steps_beyond_the_answer_length_are_capped_and_a_name_shows_them():
    config = flag_config(args_of("--factor", "2.0", "--steps", "256"))
    assert config.params().steps == 64 and config.params().factor == 2.0  # 64-token answers
    assert config.name == "dual cache, factor 2.0, block 32"
    assert flag_config(args_of("--no-cache", "--steps", "16")).name == "none cache, fixed 16 steps, block 32"


@pytest.mark.parametrize("flags, message", [
    (["--threshold", "0.9", "--factor", "1.0"], "--threshold and --factor"),
    (["--block-length", "0"], "--block-length"),
    (["--threshold", "1.5"], "--threshold"),
])
def test_contradictory_or_out_of_range_flags_are_refused_by_name(flags, message):
    with pytest.raises(SystemExit, match=message):
        flag_config(args_of(*flags))


def test_tasks_run_the_backend_with_the_flags_as_model_args():
    settings = harness_settings(args_of("--tasks", "gsm8k", "--use-dual-cache", "--threshold", "0.9", "--steps",
                                        "256", "--gen-length", "256", "--model", "GSAI-ML/LLaDA-8B-Instruct",
                                        "--num-fewshot", "5"), ["gsm8k"])
    assert settings["model"] == "fastdllm" and settings["num_fewshot"] == 5 and not settings["apply_chat_template"]
    options, decoding = parse_model_args(settings["model_args"])  # the backend reads what the CLI writes
    assert options.pretrained == "GSAI-ML/LLaDA-8B-Instruct"
    assert decoding.params(256) == decoding.params(1)  # gen_length fixed by the flags, not the task
    assert (decoding.cache, decoding.threshold, decoding.params(1).steps, decoding.params(1).gen_length) == \
        ("dual", 0.9, 256, 256)


def test_tasks_through_a_server_use_lm_evals_openai_backends_with_extra_body_fields():
    args = args_of("--tasks", "gsm8k", "--base-url", "http://127.0.0.1:8000/", "--no-cache", "--gen-length", "256")
    args.served_model = "llada-8b-instruct"
    settings = harness_settings(args, ["gsm8k"])
    assert settings["model"] == "local-completions"
    assert settings["model_args"]["base_url"] == "http://127.0.0.1:8000/v1/completions"
    assert settings["gen_kwargs"] == {"use_cache": False, "max_gen_toks": 256}
    args.apply_chat_template = True
    assert harness_settings(args, ["gsm8k"])["model"] == "local-chat-completions"
    # the local tasks are chat tasks: the template goes on by itself
    assert harness_settings(args_of("--tasks", "tiny_arith"), ["tiny_arith"])["apply_chat_template"]
