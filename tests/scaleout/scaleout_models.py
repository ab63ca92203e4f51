"""The models of the scale-out suite's app (conftest.py deploys it), one per concern."""

from __future__ import annotations

APP = "scaleout"
FATES = "arith-fates"  # the shipped model with small bounds: request-fate accounting
PAIR = "arith-pair"  # the shipped model on two one-slot replicas: load-aware routing
RANDOM = "llada-random"  # the refdata checkpoint: a second model behind the ingress
AUTOSCALED = "arith-autoscaled"  # the shipped model on 1..4 replicas
DREAM = "dream-tiny"  # the embedded tiny Dream: a second model family behind the same ingress
V2 = "v2-tiny"  # the tiny Fast-dLLM v2 checkpoint: a block-diffusion family beside them
LLADA2 = "llada2-tiny"  # the tiny LLaDA2.0 checkpoint: the block-diffusion mixture of experts
PREFIX = "v2-prefix"  # the tiny Fast-dLLM v2 on two replicas: prefix sharing and the prefix router

# 2 ongoing requests per replica are its target: 8 clients ask for 4 replicas
AUTOSCALING = {"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 2,
               "upscale_delay_s": 1.0, "downscale_delay_s": 5.0, "look_back_period_s": 2.0}


def autoscaled_entry() -> dict:
    # no warm-up: it saves seconds of CPU per added replica, and a CPU replica has nothing to compile
    return {"model_name": AUTOSCALED, "autoscaling": AUTOSCALING,
            "engine": {"max_num_seqs": 2, "max_queue": 8, "warm_up": False}}


def engine_deployment(model: str) -> str:
    from fastdllm_ray.serve.builder import engine_deployment_name

    return engine_deployment_name(model, num_models=8)
