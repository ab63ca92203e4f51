"""A checkpoint that declares a huge context (Dream's config says 131072 positions) does not make
every seat reserve cache for it: without max_model_len the engine and the API use at most 8192."""

from __future__ import annotations

import json
import shutil

from fastdllm_ray import Engine, EngineConfig, load_model
from fastdllm_ray.engine.engine import DEFAULT_CONTEXT_CAP
from tests.conftest import TINY_DREAM


def test_declared_context_is_capped_unless_asked_for(tmp_path):
    for source in TINY_DREAM.iterdir():
        shutil.copy(source, tmp_path / source.name)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 131072}))
    model = load_model(tmp_path)
    assert model.config.max_sequence_length == 131072
    engine = Engine(model, EngineConfig(max_num_seqs=2, page_size=64))
    assert engine.max_model_len == DEFAULT_CONTEXT_CAP == 8192
    assert engine.pool.num_pages == 2 * 8192 // 64
    assert Engine(model, EngineConfig(max_num_seqs=1, max_model_len=20000)).max_model_len == 20000  # asked for
    small = load_model(TINY_DREAM)  # a model that declares less keeps its own
    assert Engine(small, EngineConfig(max_num_seqs=1)).max_model_len == 512
