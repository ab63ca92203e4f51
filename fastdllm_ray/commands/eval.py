"""`fastdllm-ray eval`: accuracy, NFE, tokens per forward and tokens/s of each decoding
configuration on held-out arithmetic chat problems (single questions, and conversations
scored turn by turn), through the engine here or, with --base-url, through a running
server's OpenAI API. Prints tables, writes CSV and PNG. A Dream model (or --algs) is
evaluated over Dream's algs instead of LLaDA's commit rules.

The Fast-dLLM server's evaluation-script flags (--use-cache/--no-cache, --use-dual-cache,
--threshold, --factor, --steps, --block-length, --quick-test) select one configuration instead
of the grid; --tasks hands the same settings to lm-evaluation-harness (e.g. --tasks gsm8k)."""

from __future__ import annotations

import argparse
import shlex
import sys
from datetime import date
from functools import partial
from pathlib import Path

DEFAULT_SEED = 1234  # training used seed 0; the held-out split is disjoint whatever the seeds
QUICK_PROBLEMS = 20  # --quick-test


def _ints(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None


def _names(text: str) -> list[str]:
    return [v for v in text.split(",") if v]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("eval", help="accuracy vs speed of decoding configurations",
                                   description=__doc__)
    parser.add_argument("--model", help="checkpoint directory, HF hub id or shipped model name "
                                        "(default: the shipped tiny-llada-arith)")
    parser.add_argument("--base-url", help="evaluate a running server instead (e.g. http://127.0.0.1:8000)")
    parser.add_argument("--api-key", default="none", help="bearer key for --base-url")
    parser.add_argument("--served-model", help="model name to send with --base-url (default: the first listed)")
    parser.add_argument("--num-problems", type=int, default=500)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="held-out problem seed")
    parser.add_argument("--cache", type=_names, default=["none", "prefix", "dual"], help="e.g. none,dual")
    parser.add_argument("--schedule", type=_names, default=["fixed", "threshold", "factor"],
                        help="fixed (one token per step), threshold (0.9), factor (1.0)")
    parser.add_argument("--block-lengths", type=_ints, help="default 16,32,64 (Dream: 32)")
    parser.add_argument("--algs", type=_names, help="Dream's algs (default: all four); implies a Dream model")
    parser.add_argument("--chats", type=int, default=200, help="held-out conversations (0: none)")
    parser.add_argument("--turns", type=int, default=3, help="turns per held-out conversation")
    parser.add_argument("--chat-configs", choices=["headline", "all"], default="headline",
                        help="configurations the conversations run under: the server's defaults and dual "
                             "cache + threshold 0.9 (headline), or every one")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16", "fp8"])
    parser.add_argument("--batch-size", type=int, default=64, help="live sequences in the engine")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight with --base-url")
    parser.add_argument("--out-dir", type=Path, default=Path("eval-results"), help="where CSV and PNG go")
    parser.add_argument("--benchmarks", type=Path, help="also record the table in this BENCHMARKS.md")
    parser.add_argument("--eager", action="store_true", help="no CUDA graphs or torch.compile on the GPU")
    parser.add_argument("--no-progress", action="store_true")
    _add_server_script_flags(parser)
    harness = parser.add_argument_group("lm-evaluation-harness")
    harness.add_argument("--tasks", type=_names, help="lm-eval tasks (e.g. gsm8k, or the local tiny_arith,"
                         "tiny_arith_mc) run with these settings instead of the arithmetic grid")
    harness.add_argument("--num-fewshot", type=int, help="lm-eval --num_fewshot")
    harness.add_argument("--limit", type=float, help="lm-eval --limit: documents per task (or a fraction)")
    harness.add_argument("--apply-chat-template", action="store_true", help="lm-eval --apply_chat_template")
    harness.add_argument("--mc-num", type=int, help="Monte Carlo samples per log-likelihood (default 128)")
    parser.set_defaults(func=run)


def _add_server_script_flags(parser: argparse.ArgumentParser) -> None:
    fast = parser.add_argument_group("one configuration, by the Fast-dLLM server evaluation script's flags")
    fast.add_argument("--use-cache", dest="use_cache", action="store_true", default=None,
                      help="K/V cache on (dual unless --no-dual-cache)")
    fast.add_argument("--no-cache", dest="use_cache", action="store_false", default=None, help="no K/V cache")
    fast.add_argument("--use-dual-cache", dest="use_dual_cache", action="store_true", default=None)
    fast.add_argument("--no-dual-cache", dest="use_dual_cache", action="store_false", default=None,
                      help="prefix cache only")
    fast.add_argument("--threshold", type=float, help="commit positions at least this confident")
    fast.add_argument("--factor", type=float, help="Fast-dLLM factor rule")
    fast.add_argument("--steps", type=int, help="forwards spread over the blocks (default: one per token)")
    fast.add_argument("--block-length", type=int)
    fast.add_argument("--gen-length", type=int, help="answer tokens")
    fast.add_argument("--quick-test", action="store_true",
                      help=f"{QUICK_PROBLEMS} problems (with --tasks: --limit {QUICK_PROBLEMS})")


def flag_config(args: argparse.Namespace, family: str = "llada"):
    """The one DecodingConfig the server-script flags describe, or None when none is given
    (on Dream: the threshold is confidence_threshold's, else the alg is entropy)."""
    from fastdllm_ray.eval.configs import FACTOR, GEN_LENGTH, THRESHOLD, DecodingConfig
    from fastdllm_ray.lmeval.handoff import decoding_fields

    if not decoding_fields(args):
        return None
    if args.threshold is not None and args.factor is not None:
        raise SystemExit("--threshold and --factor: set at most one of them")
    for flag, value in (("--block-length", args.block_length), ("--gen-length", args.gen_length)):
        if value is not None and value < 1:
            raise SystemExit(f"{flag}: {value} must be >= 1")
    cache = "none" if args.use_cache is False else "prefix" if args.use_dual_cache is False else "dual"
    schedule = "threshold" if args.threshold is not None else "factor" if args.factor is not None else "fixed"
    config = DecodingConfig(cache, schedule, 32 if args.block_length is None else args.block_length,
                            GEN_LENGTH if args.gen_length is None else args.gen_length,
                            threshold=THRESHOLD if args.threshold is None else args.threshold,
                            factor=FACTOR if args.factor is None else args.factor, steps=args.steps,
                            alg=None if family != "dream" else "confidence_threshold" if schedule == "threshold"
                            else "entropy")
    try:
        config.params()
    except ValueError as exc:
        raise SystemExit(f"--{str(exc).replace('_', '-')}") from None
    return config


def _replier(args: argparse.Namespace):
    """(replier, family, description of what runs it): replier(conversations, config, progress)
    hands back their Replies (eval/run.py)."""
    from fastdllm_ray.eval.run import engine_replies, server_replies

    if args.base_url:
        name = served_model(args)
        replier = partial(_server, server_replies, args.base_url, name, args.api_key, args.concurrency)
        family = "dream" if args.algs else "llada"
        return replier, family, f"server {args.base_url} (model {name}, {args.concurrency} requests in flight)"
    import torch

    from fastdllm_ray.model import default_model_path, load_model, load_tokenizer
    from fastdllm_ray.model.shipped import resolve_shipped

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    path = resolve_shipped(args.model) if args.model else default_model_path()
    model = load_model(path, device=device, dtype=args.dtype)
    tokenizer = load_tokenizer(path)
    family = {"Dream": "dream", "Fast_dLLM_Qwen": "fast_dllm_v2"}.get(model.config.model_type, "llada")
    family = "dream" if args.algs else family
    what = torch.cuda.get_device_name() if device == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    replier = partial(_engine, engine_replies, model, tokenizer, args.batch_size, args.eager)
    weights = "fp8 weights + " if args.dtype == "fp8" else ""  # fp8: linear weights only (model/fp8.py)
    return replier, family, (f"engine on {what}, {weights}{str(model.dtype).removeprefix('torch.')}, "
                             f"batch {args.batch_size}, model {Path(str(path)).name}")


def served_model(args: argparse.Namespace) -> str:
    """--served-model, else the first model the server lists."""
    if args.served_model is not None:
        return args.served_model
    from openai import OpenAI

    client = OpenAI(base_url=args.base_url.rstrip("/") + "/v1", api_key=args.api_key)
    return client.models.list().data[0].id


def _engine(engine_replies, model, tokenizer, batch_size, eager, conversations, config, bar):
    return engine_replies(model, tokenizer, conversations, config, batch_size=batch_size, progress=bar, eager=eager)


def _server(server_replies, base_url, name, api_key, concurrency, conversations, config, bar):
    return server_replies(base_url, name, conversations, config, api_key=api_key, concurrency=concurrency,
                          progress=bar)


def _single(replier, problems, config, bar):
    from fastdllm_ray.eval.run import score, single_question

    return score(config, problems, replier([single_question(p) for p in problems], config, bar))


def _configs(args: argparse.Namespace, family: str):
    """(the single-question grid, the configurations conversations run under)."""
    from fastdllm_ray.eval.configs import ALGS, BLOCK_LENGTHS, DecodingConfig, dream_grid, grid, v2_grid

    if family == "fast_dllm_v2":  # threshold x block cache; conversations at the default (1.0) and 0.9
        thresholds = [args.threshold] if args.threshold is not None else None
        try:
            configs = v2_grid(thresholds) if thresholds else v2_grid()
        except ValueError as exc:
            raise SystemExit(f"--{exc}") from None
        return configs, [c for c in configs if not c.block_cache and c.threshold in (1.0, 0.9)]
    config = flag_config(args, family)
    try:
        if config:
            configs = [config]
        elif family == "dream":
            configs = dream_grid(args.cache, args.algs or ALGS, args.block_lengths or [32])
        else:
            configs = grid(args.cache, args.schedule, args.block_lengths or BLOCK_LENGTHS)
    except ValueError as exc:
        raise SystemExit(f"--{exc}") from None
    if args.chat_configs == "all" or config:
        return configs, configs
    alg = "entropy" if family == "dream" else None  # the server's defaults: dual cache, one token per step
    fast_alg = "confidence_threshold" if family == "dream" else None
    return configs, [DecodingConfig("dual", "fixed", 32, alg=alg), DecodingConfig("dual", "threshold", 32, alg=fast_alg)]


def run(args: argparse.Namespace) -> int:
    from fastdllm_ray.eval import evaluate, headline
    from fastdllm_ray.eval import report
    from fastdllm_ray.commands.sections import update_section
    from fastdllm_ray.eval.turns import evaluate_turns, turn_headline
    from fastdllm_ray.train.chats import chats as make_chats
    from fastdllm_ray.train.data import problems as make_problems

    if args.quick_test:
        args.num_problems, args.limit = QUICK_PROBLEMS, args.limit or QUICK_PROBLEMS
        args.chats = min(args.chats, QUICK_PROBLEMS)
    if args.num_problems < 1:
        raise SystemExit("--num-problems: must be >= 1")
    if args.chats < 0 or args.turns < 1:
        raise SystemExit("--chats: must be >= 0, --turns: >= 1")
    if args.tasks:
        from fastdllm_ray.lmeval.handoff import run_tasks

        if args.base_url:
            args.served_model = served_model(args)
        return run_tasks(args, args.tasks)
    replier, family, what = _replier(args)
    configs, chat_configs = _configs(args, family)
    problems = make_problems(args.num_problems, args.seed, "eval")
    chats = make_chats(args.chats, args.seed, "eval", args.turns) if args.chats else []
    runner = partial(_single, replier)
    runner(problems[: min(8, len(problems))], configs[0], None)  # warm-up: first-call costs stay out of the timings
    results = evaluate(problems, configs, runner, show_progress=not args.no_progress)
    turn_results = evaluate_turns(chats, chat_configs, replier, show_progress=not args.no_progress) if chats else []

    print(report.text_table(results))
    if turn_results:
        print(report.text_table(report.flatten(turn_results), turns=True))
    summary = headline(results) + turn_headline(turn_results)
    print("\n".join(summary))
    args.out_dir.mkdir(parents=True, exist_ok=True)
    report.write_csv(results, args.out_dir / "eval.csv")
    if turn_results:
        report.write_csv(report.flatten(turn_results), args.out_dir / "eval-turns.csv", turns=True)
    title = f"{len(problems)} held-out problems, {what}"
    try:
        report.write_plot(results, args.out_dir / "eval.png", title)
    except ImportError:
        print("matplotlib is not installed: no plot written", file=sys.stderr)
    print(f"wrote {args.out_dir / 'eval.csv'} and {args.out_dir / 'eval.png'}")
    if args.benchmarks:
        command = "fastdllm-ray eval " + shlex.join(sys.argv[2:] if sys.argv[1:2] == ["eval"] else sys.argv[1:])
        section = {"dream": "eval-dream", "fast_dllm_v2": "eval-v2"}.get(family, "eval")
        update_section(args.benchmarks, section, report.benchmarks_section(
            command, date.today().isoformat(), title, summary, results, turn_results, len(chats), args.turns))
        print(f"recorded in {args.benchmarks}")
    return 0
