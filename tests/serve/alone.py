"""What a checkpoint answers on its own, with no server, to an OpenAI request body: the body
becomes prompt ids and settings as the server makes them (its model view, serve/models.py, and
serve/convert.py with the model's family), then an Engine decodes it alone. Serving tests hold
an answer that came over HTTP, batched with others, to this."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from fastdllm_ray import Engine, EngineConfig, load_model
from fastdllm_ray.engine.outputs import BlockOutput, GenerationResult
from fastdllm_ray.serve.config import AppConfig
from fastdllm_ray.serve.convert import EngineRequest, chat_request, completion_request
from fastdllm_ray.serve.models import ServedModel
from fastdllm_ray.serve.protocol import ChatCompletionRequest, CompletionRequest
from fastdllm_ray.serve.text import TextAssembler


@lru_cache(maxsize=None)
def served_view(checkpoint: Path) -> ServedModel:
    """The ingress's view of a checkpoint (tokenizer, limits, family), with no engine behind it."""
    return ServedModel.load(AppConfig(model=str(checkpoint)), engine=None, device="cpu")


@lru_cache(maxsize=None)
def _model(checkpoint: Path):
    return load_model(checkpoint)


def engine_request(checkpoint: Path, body: dict) -> EngineRequest:
    """What the server hands its engine for `body` (a chat body when it has `messages`)."""
    view = served_view(checkpoint)
    body = {"model": view.name, **body}
    if "messages" in body:
        return chat_request(ChatCompletionRequest(**body), view.encoder, view.max_model_len, view.default_max_tokens,
                            view.policy)
    return completion_request(CompletionRequest(**body), view.encoder, view.max_model_len, view.default_max_tokens,
                              view.policy)


def outputs_alone(checkpoint: Path, body: dict, stream_steps: bool = False) -> list[BlockOutput]:
    """Every output the engine hands back for `body` decoded alone, in order."""
    request = engine_request(checkpoint, body)
    engine = Engine(_model(checkpoint), EngineConfig(max_num_seqs=1))
    engine.add_request(request.prompt_ids, request.params, request_id="alone", stream_steps=stream_steps)
    outputs = []
    while engine.has_unfinished():
        outputs += engine.step()
    return outputs


def answer_alone(checkpoint: Path, body: dict) -> tuple[str, GenerationResult]:
    """The answer's text (as the server decodes it) and the engine's result."""
    result = outputs_alone(checkpoint, body)[-1].result
    return served_view(checkpoint).tokenizer.decode(result.token_ids, skip_special_tokens=True), result


def deltas_alone(checkpoint: Path, body: dict) -> list[str]:
    """The text deltas a stream of `body` sends: one per output carrying tokens (a block, or a
    carried id), through the server's text assembly."""
    text = TextAssembler(served_view(checkpoint).tokenizer)
    return [text.add(out.token_ids, final=out.finished) for out in outputs_alone(checkpoint, body)
            if out.token_ids or out.finished]
