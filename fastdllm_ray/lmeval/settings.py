"""What `--model_args`, and a task's or `--gen_kwargs`' generation settings, mean to the
fastdllm backend: Fast-dLLM decoding settings -> one GenerationParams per request, and the
backend's own options. Every refusal is a ValueError naming the field.

Values arrive as lm-eval parses `key=value` strings: "True" -> True, "32" -> 32, "0.9" -> 0.9,
"none" -> None (so `cache=none` arrives as None and means no cache).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Optional

from fastdllm_ray.params import CACHE_MODES, GenerationParams

# Fast-dLLM settings: model_args set them for the run; a request's gen_kwargs may override them
# (the same `--gen_kwargs` string then means the same thing here and through the server)
DECODING_FIELDS = ("cache", "use_cache", "use_dual_cache", "dual_cache", "threshold", "factor", "steps",
                   "block_length", "gen_length", "temperature", "remasking", "alg", "top_p", "top_k",
                   "sub_block_length", "block_cache", "steps_per_block")
_CACHE_FLAGS = ("use_cache", "use_dual_cache", "dual_cache")  # server / Fast-dLLM eval_llada.py names
_REQUEST_FIELDS = ("until", "max_gen_toks", "do_sample")  # what lm-eval tasks put in gen_kwargs
DEFAULT_MAX_GEN_TOKS = 256  # lm-eval's own default when a task names none
DEFAULT_BATCH_SIZE = 32  # live sequences for `--batch_size auto`


@dataclass(frozen=True)
class Decoding:
    """A run's decoding settings; None where the request, the model's family or (for a family
    with `steps`) one token per step decides. Which fields apply depends on the model's family
    (GenerationParams); the engine refuses the others by name."""

    cache: Optional[str] = None
    threshold: Optional[float] = None
    factor: Optional[float] = None
    steps: Optional[int] = None  # None: one token per step (steps = the padded answer length)
    block_length: int = 32
    gen_length: Optional[int] = None  # None: the task's max_gen_toks
    temperature: float = 0.0
    remasking: Optional[str] = None
    alg: Optional[str] = None
    top_p: Optional[float] = None
    top_k: Optional[int] = None
    sub_block_length: Optional[int] = None
    block_cache: Optional[bool] = None
    steps_per_block: Optional[int] = None

    def updated(self, fields: dict[str, Any]) -> "Decoding":
        """These settings with `fields` (a subset of DECODING_FIELDS) applied."""
        changes = {k: v for k, v in fields.items() if k not in ("cache",) + _CACHE_FLAGS}
        decoding = replace(self, cache=_cache_mode(fields, self.cache), **changes)
        decoding.params(1)  # refuse bad values now, naming the field, not at the first request
        return decoding

    def params(self, max_gen_toks: int, fill_steps: bool = True) -> GenerationParams:
        """One request's GenerationParams; `fill_steps`: the model's family takes `steps`, and an
        unset one means one token per step."""
        gen_length = self.gen_length if self.gen_length is not None else max_gen_toks
        steps = self.steps
        if fill_steps and _positive_int(gen_length) and _positive_int(self.block_length):  # else GenerationParams says why
            padded = -(-gen_length // self.block_length) * self.block_length
            if steps is None:
                steps = padded
            elif _positive_int(steps):  # more steps than answer tokens would commit nothing
                steps = min(steps, padded)
        return GenerationParams(steps=steps, gen_length=gen_length, block_length=self.block_length,
                                threshold=self.threshold, factor=self.factor, temperature=self.temperature,
                                remasking=self.remasking, cache=self.cache, alg=self.alg, top_p=self.top_p,
                                top_k=self.top_k, sub_block_length=self.sub_block_length,
                                block_cache=self.block_cache, steps_per_block=self.steps_per_block)


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _cache_mode(fields: dict[str, Any], current: str) -> str:
    """`cache=none|prefix|dual`, or the server's booleans (use_cache, use_dual_cache; dual_cache
    is Fast-dLLM's eval_llada.py name for the latter), never both ways at once."""
    flags = {k: fields[k] for k in _CACHE_FLAGS if k in fields}
    if "cache" in fields:
        if flags:
            raise ValueError(f"cache: set either cache or {'/'.join(flags)}, not both")
        mode = "none" if fields["cache"] is None else fields["cache"]
        if mode not in CACHE_MODES:
            raise ValueError(f"cache: {mode!r} is not one of {CACHE_MODES}")
        return mode
    if not flags:
        return current
    for name, value in flags.items():
        if not isinstance(value, bool):
            raise ValueError(f"{name}: {value!r} is not a bool (True or False)")
    if "use_dual_cache" in flags and "dual_cache" in flags and flags["use_dual_cache"] != flags["dual_cache"]:
        raise ValueError("use_dual_cache: contradicts dual_cache")
    if not flags.get("use_cache", True):
        return "none"
    return "dual" if flags.get("use_dual_cache", flags.get("dual_cache", True)) else "prefix"


def request_settings(decoding: Decoding, gen_kwargs: dict[str, Any],
                     fill_steps: bool = True) -> tuple[GenerationParams, tuple[str, ...]]:
    """(params, stop strings) of one generate_until request (`fill_steps`: see Decoding.params)."""
    kwargs = dict(gen_kwargs or {})
    until = kwargs.pop("until", None)
    stops = (until,) if isinstance(until, str) else tuple(until or ())
    if not all(isinstance(s, str) and s for s in stops):
        raise ValueError(f"until: {until!r} must be a non-empty string or a list of them")
    max_gen_toks = kwargs.pop("max_gen_toks", DEFAULT_MAX_GEN_TOKS)
    sampling = kwargs.pop("do_sample", False)
    temperature = kwargs.pop("temperature", None)
    overrides = {k: kwargs.pop(k) for k in DECODING_FIELDS if k in kwargs}
    if kwargs:
        raise ValueError(f"gen_kwargs: {sorted(kwargs)[0]!r} is not supported by the fastdllm backend "
                         f"(known: {', '.join(_REQUEST_FIELDS + DECODING_FIELDS)})")
    if sampling and temperature:  # greedy unless the task asks to sample
        overrides.setdefault("temperature", temperature)
    if overrides:
        decoding = decoding.updated(overrides)
    if not _positive_int(max_gen_toks):
        raise ValueError(f"max_gen_toks: {max_gen_toks!r} must be an integer >= 1")
    return decoding.params(max_gen_toks, fill_steps), stops


@dataclass(frozen=True)
class BackendOptions:
    pretrained: Optional[str] = None  # checkpoint directory or hub id; None: the shipped model
    device: Optional[str] = None  # None: this process's accelerator device, else cuda if present
    dtype: Optional[str] = None  # None: float32 on the CPU, bfloat16 on a GPU
    batch_size: int = DEFAULT_BATCH_SIZE  # live sequences in the engine
    mc_num: int = 128  # Monte Carlo samples per log-likelihood (LLaDA's evaluation default)
    mc_batch_size: int = 32  # samples per forward
    check_greedy: bool = False  # also decode each continuation greedily for is_greedy
    seed: int = 0
    max_length: Optional[int] = None  # context cap; None: the model's max_sequence_length


def parse_model_args(args: dict[str, Any]) -> tuple[BackendOptions, Decoding]:
    """lm-eval's model_args (plus its batch_size/max_batch_size/device) -> options, decoding."""
    args = dict(args)
    decoding = Decoding().updated({k: args.pop(k) for k in DECODING_FIELDS if k in args})
    batch_size = _batch_size(args.pop("batch_size", None), args.pop("max_batch_size", None))
    known = BackendOptions.__dataclass_fields__
    unknown = [k for k in args if k not in known]
    if unknown:
        raise ValueError(f"model_args: unknown field {unknown[0]!r} (known: "
                         f"{', '.join(sorted([*known, *DECODING_FIELDS]))})")
    options = BackendOptions(batch_size=batch_size, **args)
    for name in ("mc_num", "mc_batch_size", "batch_size"):
        if not _positive_int(getattr(options, name)):
            raise ValueError(f"{name}: {getattr(options, name)!r} must be an integer >= 1")
    if options.mc_num % min(options.mc_batch_size, options.mc_num):
        raise ValueError(f"mc_num: {options.mc_num} is not a multiple of mc_batch_size {options.mc_batch_size}")
    if not isinstance(options.check_greedy, bool):
        raise ValueError(f"check_greedy: {options.check_greedy!r} is not a bool")
    if not isinstance(options.seed, int) or isinstance(options.seed, bool):
        raise ValueError(f"seed: {options.seed!r} is not an integer")
    if options.max_length is not None and not _positive_int(options.max_length):
        raise ValueError(f"max_length: {options.max_length!r} must be an integer >= 1")
    return options, decoding


def _batch_size(value, cap) -> int:
    """lm-eval's --batch_size: an integer (maybe as text) or "auto" / "auto:N"."""
    if value is None or str(value).startswith("auto"):
        return int(cap) if cap else DEFAULT_BATCH_SIZE
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"batch_size: {value!r} is not an integer or 'auto'") from None
