"""`fastdllm-ray eval --tasks ...`: the eval command's settings handed to lm-evaluation-harness,
run by the fastdllm backend in this process (one rank of `accelerate launch` if started by
it), or, with --base-url, through a running server by lm-eval's own OpenAI-compatible
backends (local-chat-completions with --apply-chat-template, else local-completions), the
Fast-dLLM settings travelling as extra body fields."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from fastdllm_ray.lmeval import LOCAL_TASKS, MODEL_NAME, TASKS_DIR


def decoding_fields(args: argparse.Namespace) -> dict:
    """The Fast-dLLM settings given on the command line, by the server's field names (which the
    fastdllm backend takes as model_args too)."""
    fields = {name: getattr(args, name) for name in ("use_cache", "use_dual_cache", "threshold", "factor", "steps",
                                                      "block_length") if getattr(args, name) is not None}
    if args.gen_length is not None:
        fields["gen_length"] = args.gen_length
    return fields


def harness_settings(args: argparse.Namespace, tasks: list[str]) -> dict:
    """simple_evaluate's keyword arguments (model, model_args, gen_kwargs, ...) for these flags."""
    fields = decoding_fields(args)
    chat = args.apply_chat_template or all(t in LOCAL_TASKS for t in tasks)  # the local tasks are chat tasks
    settings = {"tasks": tasks, "num_fewshot": args.num_fewshot, "limit": args.limit, "apply_chat_template": chat,
                "log_samples": False}
    if not args.base_url:
        model_args = {**fields}
        if args.model:
            model_args["pretrained"] = args.model
        for name in ("dtype", "mc_num"):
            if getattr(args, name):
                model_args[name] = getattr(args, name)
        return {**settings, "model": MODEL_NAME, "model_args": model_args, "batch_size": args.batch_size,
                "device": None if args.device == "auto" else args.device}
    gen_kwargs = {k: v for k, v in fields.items() if k != "gen_length"}
    if "gen_length" in fields:
        gen_kwargs["max_gen_toks"] = fields["gen_length"]
    route = "chat/completions" if chat else "completions"
    model_args = {"model": args.served_model, "base_url": f"{args.base_url.rstrip('/')}/v1/{route}",
                  "num_concurrent": args.concurrency, "max_retries": 3,
                  # the server tokenizes: no client-side tokenizer to download
                  "tokenizer_backend": None, "tokenized_requests": False}
    return {**settings, "model": "local-chat-completions" if chat else "local-completions",
            "model_args": model_args, "gen_kwargs": gen_kwargs or None}


def run_tasks(args: argparse.Namespace, tasks: list[str]) -> int:
    import lm_eval
    from lm_eval.tasks import TaskManager
    from lm_eval.utils import handle_non_serializable, make_table, setup_logging

    import fastdllm_ray.lmeval.backend  # noqa: F401  (registers the model even without the .pth hook)
    from fastdllm_ray.lmeval.parallel import leave_process_group

    setup_logging()  # lm-eval's progress lines, as its own CLI shows them
    settings = harness_settings(args, tasks)
    if args.base_url and args.api_key != "none":
        os.environ["OPENAI_API_KEY"] = args.api_key  # what lm-eval's local-* backends send as bearer key
    # indexing lm-eval's ~15k built-in tasks takes tens of seconds: skip it when only ours are asked for
    manager = TaskManager(include_path=str(TASKS_DIR), include_defaults=not all(t in LOCAL_TASKS for t in tasks))
    print(f"lm-eval: model {settings['model']}, model_args {settings['model_args']}"
          + (f", gen_kwargs {settings['gen_kwargs']}" if settings.get("gen_kwargs") else ""))
    results = lm_eval.simple_evaluate(task_manager=manager, **settings)
    if results is not None:  # None on the other ranks of a data-parallel run: rank 0 reports
        print(make_table(results))
        if "groups" in results:
            print(make_table(results, "groups"))
        out = Path(args.out_dir) / "lm-eval-results.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2, default=handle_non_serializable))
        print(f"wrote {out}")
    leave_process_group()
    return 0
