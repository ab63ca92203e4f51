"""`lm_eval --model fastdllm`: lm-evaluation-harness runs its tasks through our engine.

    lm_eval --model fastdllm --model_args pretrained=GSAI-ML/LLaDA-8B-Instruct,cache=dual,threshold=0.9,\\
        block_length=32,steps=256,gen_length=256 --tasks gsm8k --num_fewshot 5 --batch_size 32

- generate_until: every request of a task goes into one continuously batched engine
  (`--batch_size` live sequences) with the Fast-dLLM settings of model_args (a request's
  gen_kwargs may override them); the answer is cut at the task's stop strings, and a request is
  aborted as soon as one appears.
- loglikelihood: LLaDA's Monte Carlo estimate (likelihood.py) with `mc_num` maskings,
  `mc_batch_size` per forward; `check_greedy=True` also decodes each continuation one token per
  step and reports whether it matches (is_greedy; False otherwise, as in LLaDA's evaluation).
- loglikelihood_rolling (perplexity tasks) is not supported: a diffusion LM has no
  left-to-right factorisation to roll over.
- Under `accelerate launch` each process is one rank with its own engine (parallel.py).
"""

from __future__ import annotations

import logging
import time

from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from tqdm import tqdm

from fastdllm_ray.lmeval import MODEL_NAME
from fastdllm_ray.lmeval.decode import Job, run_jobs
from fastdllm_ray.lmeval.likelihood import mc_loglikelihood, request_generator
from fastdllm_ray.decoding import policy_for
from fastdllm_ray.lmeval.parallel import DataParallel
from fastdllm_ray.lmeval.settings import parse_model_args, request_settings
from fastdllm_ray.model import default_model_path, load_model, load_tokenizer
from fastdllm_ray.params import GenerationParams

# under lm-eval's logger, so that its CLI's logging (which configures "lm_eval" only) shows ours
logger = logging.getLogger("lm_eval.models.fastdllm")


@register_model(MODEL_NAME)
class FastDLLMLM(TemplateLM):
    def __init__(self, **model_args) -> None:
        super().__init__()
        self.options, self.decoding = parse_model_args(model_args)
        self.parallel = DataParallel(self.options.device)
        self._rank, self._world_size, self._device = self.parallel.rank, self.parallel.world_size, self.parallel.device
        self.pretrained = str(self.options.pretrained or default_model_path())
        self.model = load_model(self.pretrained, device=self._device, dtype=self.options.dtype)
        self.tokenizer = load_tokenizer(self.pretrained)
        self.policy = policy_for(self.model.config.model_type)
        context = self.model.config.max_sequence_length
        self.max_length = min(self.options.max_length or context, context)

    # ---- tokens ---------------------------------------------------------------------------
    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def prefix_token_id(self) -> int:
        # an empty context is conditioned on BOS, the token every LLaDA prompt starts with
        bos = self.tokenizer.bos_token_id
        return bos if bos is not None else self.eot_token_id

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        if add_special_tokens is None:  # a chat-templated context already starts with BOS
            bos = self.tokenizer.bos_token
            add_special_tokens = not (bos and string.startswith(bos))
        return list(self.tokenizer(string, add_special_tokens=add_special_tokens)["input_ids"])

    def tok_decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=True)

    @property
    def tokenizer_name(self) -> str:
        return self.pretrained.replace("/", "__")

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        return self.tokenizer.apply_chat_template(chat_history, tokenize=False,
                                                  add_generation_prompt=add_generation_prompt,
                                                  continue_final_message=not add_generation_prompt)

    # ---- requests -------------------------------------------------------------------------
    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        jobs = [self._generation_job(context, gen_kwargs) for context, gen_kwargs in (r.args for r in requests)]
        started = time.perf_counter()
        with tqdm(total=len(jobs), desc="fastdllm generate_until", disable=disable_tqdm or self.rank != 0) as bar:
            completions = run_jobs(self.model, self.tokenizer, jobs, self.options.batch_size, self.options.seed, bar)
        seconds = time.perf_counter() - started
        nfe = sum(c.nfe for c in completions)
        logger.info("rank %d: %d requests in %.1f s, mean NFE %.1f, %.2f answer tokens per forward", self.rank,
                    len(jobs), seconds, nfe / max(1, len(jobs)),
                    sum(len(c.token_ids) for c in completions) / max(1, nfe))
        texts = [c.text for c in completions]
        for request, text in zip(requests, texts):
            self.cache_hook.add_partial("generate_until", request.args, text)
        return texts

    def _generation_job(self, context: str, gen_kwargs: dict) -> Job:
        params, stops = request_settings(self.decoding, gen_kwargs, fill_steps="steps" in self.policy.accepts)
        room = self.max_length - params.padded_gen_length
        if room < 1:
            raise ValueError(f"gen_length: {params.padded_gen_length} answer tokens leave no room for a prompt "
                             f"within max_length {self.max_length}")
        return Job(self.tok_encode(context)[-room:], params, stops)  # keep the end of a long prompt

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
        if self.policy.shares_prefix:
            raise NotImplementedError(f"fastdllm: loglikelihood is LLaDA's Monte Carlo estimate over a whole-canvas "
                                      f"model; {self.policy.family} (block diffusion) has no estimator here yet: "
                                      "use generate_until tasks")
        pairs = [self._fit(context, continuation) for _, context, continuation in requests]
        scores = []
        for prefix, target in tqdm(pairs, desc="fastdllm loglikelihood", disable=disable_tqdm or self.rank != 0):
            scores.append(mc_loglikelihood(self.model, prefix, target, self.model.config.mask_token_id,
                                           self.options.mc_num, self.options.mc_batch_size,
                                           request_generator(prefix, self.options.seed)))
        greedy = self._greedy_matches(pairs) if self.options.check_greedy else [False] * len(pairs)
        results = list(zip(scores, greedy))
        for (args, _, _), result in zip(requests, results):
            self.cache_hook.add_partial("loglikelihood", args, result)
        return results

    def _fit(self, prefix: list[int], target: list[int]) -> tuple[list[int], list[int]]:
        """Cuts the prefix's start (then the target's) so that both fit in max_length."""
        target = target[-(self.max_length - 1):]
        return prefix[-(self.max_length - len(target)):], target

    def _greedy_matches(self, pairs: list[tuple[list[int], list[int]]]) -> list[bool]:
        """Whether decoding each target's length, one token per step with no cache (the rule of
        LLaDA's greedy check), writes exactly the target."""
        jobs = [Job(prefix, GenerationParams(steps=len(target), gen_length=len(target), block_length=len(target),
                                             cache="none", stop_at_eos=False)) for prefix, target in pairs]
        completions = run_jobs(self.model, self.tokenizer, jobs, self.options.batch_size, self.options.seed)
        return [c.token_ids == target for c, (_, target) in zip(completions, pairs)]

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        raise NotImplementedError("fastdllm: loglikelihood_rolling (perplexity tasks) is not supported: a "
                                  "masked-diffusion LM has no left-to-right factorisation to roll over")

    # ---- data parallel (lm-eval's evaluator calls these) ----------------------------------
    def all_gather(self, tensor):
        return self.parallel.all_gather(tensor)

    def gather_object(self, obj, dst: int = 0):
        return self.parallel.gather_object(obj, dst)

    def barrier(self) -> None:
        self.parallel.barrier()
