"""AppConfig: everything that shapes a served app, validated once at the edge.

The same config is the `args` of a Ray Serve config file (`import_path:
fastdllm_ray.serve.builder:build_app`), what the `fastdllm-ray serve` CLI builds from its
flags, and what the KubeRay RayService embeds.
"""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class EngineSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_num_seqs: int = Field(16, ge=1, description="live sequences per replica (seats of the batch)")
    max_model_len: Optional[int] = Field(None, ge=2, description="prompt + answer tokens per sequence")
    max_queue: int = Field(64, ge=1, description="waiting requests per replica before 503")
    page_size: int = Field(64, ge=16, description="positions per K/V cache page (a power of two)")
    num_pages: Optional[int] = Field(None, ge=1, description="K/V cache pages per replica; default: "
                                     "max_num_seqs sequences of max_model_len")
    gpu_memory_utilization: Optional[float] = Field(
        None, gt=0, le=1, description="on a GPU, size the K/V pool from memory: the share of the GPU's memory the "
        "replica may use for weights, activations, CUDA graphs and K/V pages; the pages get what is left (at most "
        "max_num_seqs sequences of max_model_len). Default: num_pages' default (opt-in until measured on a GPU)")
    warm_up: bool = Field(True, description="capture every CUDA graph and compile before traffic, so no "
                          "request pays for compilation or capture")
    prefix_sharing: bool = Field(True, description="requests whose prompts begin alike share the K/V pages of "
                                 "their common whole blocks (block-diffusion models only: Fast-dLLM v2)")


class AutoscalingSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(1, ge=1)
    target_ongoing_requests: Optional[float] = Field(
        None, gt=0, description="default: the engine's max_num_seqs"
    )
    # None = Serve's own defaults (30 s up, 600 s down, 30 s look-back); deployments/README.md
    # says how to size them against a replica's start-up time
    upscale_delay_s: Optional[float] = Field(None, ge=0, description="load above target this long adds replicas")
    downscale_delay_s: Optional[float] = Field(None, ge=0, description="load below target this long removes replicas")
    look_back_period_s: Optional[float] = Field(None, gt=0, description="window the ongoing requests are averaged over")

    @model_validator(mode="after")
    def _ordered(self) -> "AutoscalingSettings":
        if self.min_replicas > self.max_replicas:
            raise ValueError("min_replicas: must be <= max_replicas")
        return self


class AppConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: Optional[str] = Field(None, description="checkpoint directory or HF hub id; None = the shipped model")
    model_name: Optional[str] = Field(None, description="name clients send as `model`; default from the checkpoint")
    model_aliases: list[str] = Field(
        default_factory=list, description="more names clients may send as `model` (as vLLM's --served-model-name "
        "takes several); /v1/models lists each, metrics keep model_name")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Optional[Literal["float32", "bfloat16", "float16", "fp8"]] = Field(
        None, description="default: bfloat16 on a GPU, float32 on the CPU; fp8: the blocks' linear weights in "
        "float8 e4m3 (GPUs of compute capability >= 8.9; emulated on the CPU)")
    num_gpus_per_replica: Optional[float] = Field(None, ge=0, description="default: 1 when device is cuda")
    num_cpus_per_replica: float = Field(1, ge=0)
    num_replicas: Optional[int] = Field(None, ge=1, description="fixed replica count (no autoscaling)")
    autoscaling: AutoscalingSettings = Field(default_factory=AutoscalingSettings)
    engine: EngineSettings = Field(default_factory=EngineSettings)
    max_ongoing_requests: Optional[int] = Field(
        None, ge=1, description="per replica; default: max_num_seqs + max_queue"
    )
    max_queued_requests: Optional[int] = Field(
        None, ge=1, description="per replica, held by Serve beyond max_ongoing_requests before 503; default: max_queue"
    )
    api_keys: list[str] = Field(default_factory=list, description="accepted bearer keys; empty = no auth")
    request_timeout_s: float = Field(600.0, gt=0)
    max_body_bytes: int = Field(1 << 20, ge=1024, description="largest request body; more is refused with 413")
    seed: int = Field(0, description="engine seed for temperature > 0 and random remasking")
    prefix_routing: bool = Field(True, description="send a request to the replica that holds its prompt's "
                                 "longest prefix unless that one is much busier (models that share prefixes; "
                                 "serve/prefix_router.py); false: Serve's power-of-two routing")
    playground: bool = Field(True, description="serve the web playground page at /playground (it uses the "
                             "same /v1 API and keys as any client)")
    models: list[dict[str, Any]] = Field(
        default_factory=list, description="several models behind one ingress, routed by the request's `model`: "
        "each entry is laid over this config (engine and autoscaling key by key); empty = the one model above")

    @model_validator(mode="after")
    def _entries_valid(self) -> "AppConfig":
        if any(not alias.strip() for alias in self.model_aliases):
            raise ValueError("model_aliases: a name must not be empty")
        self.model_configs()  # an entry's error names it: models.<i>.<field>
        return self

    def model_configs(self) -> list["AppConfig"]:
        """One AppConfig per served model: this one, or each `models` entry laid over it."""
        return [self._entry(i, entry) for i, entry in enumerate(self.models)] if self.models else [self]

    def _entry(self, index: int, entry: dict[str, Any]) -> "AppConfig":
        for key in APP_WIDE_FIELDS & set(entry):
            raise ValueError(f"models.{index}.{key}: an app-wide setting, set once at the top level")
        merged = self.model_dump(exclude={"models"})
        if "autoscaling" in entry and "num_replicas" not in entry:
            merged["num_replicas"] = None  # an entry that asks for autoscaling is autoscaled
        for key, value in entry.items():
            both_dicts = isinstance(value, dict) and isinstance(merged.get(key), dict)
            merged[key] = {**merged[key], **value} if both_dicts else value
        try:
            return AppConfig.model_validate(merged)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(part) for part in first["loc"])
            raise ValueError(f"models.{index}.{field}: {first['msg']}") from None


# the ingress's own settings: one value for every model behind it
APP_WIDE_FIELDS = frozenset({"api_keys", "max_body_bytes", "models", "playground"})
