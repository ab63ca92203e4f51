"""The chat CLI's settings: `/settings name=value` words and the request they make."""

from __future__ import annotations

import pytest

from fastdllm_ray.commands.chat import change_settings, request_body

DEFAULTS = dict.fromkeys(["threshold", "factor", "block_length", "steps", "max_tokens", "temperature", "cache", "alg",
                          "top_p", "top_k"])


def test_settings_are_read_by_type_and_off_means_the_servers_default():
    settings = change_settings(DEFAULTS, ["threshold=0.9", "block-length=16", "cache=none"])
    assert (settings["threshold"], settings["block_length"], settings["cache"]) == (0.9, 16, "none")
    assert change_settings(settings, ["threshold=off", "cache=default"])["threshold"] is None
    assert change_settings(settings, ["cache=off"])["cache"] is None  # for cache, "none" is a mode


def test_threshold_and_factor_exclude_each_other_the_last_set_wins():
    with_threshold = change_settings(DEFAULTS, ["threshold=0.9"])
    with_factor = change_settings(with_threshold, ["factor=1.0"])
    assert (with_factor["threshold"], with_factor["factor"]) == (None, 1.0)
    assert change_settings(with_factor, ["threshold=0.8"])["factor"] is None


@pytest.mark.parametrize("word, message", [
    ("threshold=abc", "threshold: 'abc' is not a number"),
    ("steps=1.5", "steps: '1.5' is not a whole number"),
    ("cache=full", "cache: 'full' is not one of dual, prefix, none"),
    ("speed=11", "'speed=11': expected name=value"),
    ("threshold", "'threshold': expected name=value"),
    ("threshold=0.9 factor=1", "threshold and factor: set at most one of them"),
])
def test_a_bad_setting_is_refused_by_name(word, message):
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(")):
        change_settings(DEFAULTS, word.split())


def test_the_request_carries_only_what_was_set():
    messages = [{"role": "user", "content": "What is 2+2?"}]
    settings = change_settings(DEFAULTS, ["cache=prefix", "steps=16"])
    assert request_body("m", messages, settings) == {
        "model": "m", "messages": messages, "stream_options": {"include_usage": True},
        "use_cache": True, "use_dual_cache": False, "steps": 16}


def test_dreams_settings_travel_as_the_servers_fields():
    settings = change_settings(DEFAULTS, ["alg=maskgit_plus", "top-p=0.95", "top_k=20", "temperature=0.2"])
    body = request_body("dream", [], settings)
    assert (body["alg"], body["top_p"], body["top_k"], body["temperature"]) == ("maskgit_plus", 0.95, 20, 0.2)
    with pytest.raises(ValueError, match="^top_k: '2.5' is not a whole number"):
        change_settings(DEFAULTS, ["top_k=2.5"])


def test_block_diffusion_settings_are_flags_and_settings_sent_as_the_servers_fields():
    from fastdllm_ray.cli import build_parser
    from fastdllm_ray.commands.chat import SETTINGS

    args = build_parser().parse_args(["chat", "--sub-block-length", "4", "--no-block-cache", "--steps-per-block", "8"])
    from_flags = {name: getattr(args, name) for name in SETTINGS}
    assert (from_flags["sub_block_length"], from_flags["block_cache"], from_flags["steps_per_block"]) == (4, False, 8)
    assert build_parser().parse_args(["chat", "--block-cache"]).block_cache is True
    settings = change_settings(DEFAULTS, ["sub-block-length=4", "block_cache=true", "steps_per_block=8"])
    body = request_body("v2", [], settings)
    assert (body["sub_block_length"], body["block_cache"], body["steps_per_block"]) == (4, True, 8)
    assert request_body("v2", [], change_settings(settings, ["block_cache=false"]))["block_cache"] is False
    assert "block_cache" not in request_body("v2", [], change_settings(settings, ["block_cache=off"]))  # the default
    with pytest.raises(ValueError, match="^block_cache: 'maybe' is not true or false"):
        change_settings(DEFAULTS, ["block_cache=maybe"])
    with pytest.raises(ValueError, match="^steps_per_block: '2.5' is not a whole number"):
        change_settings(DEFAULTS, ["steps_per_block=2.5"])
