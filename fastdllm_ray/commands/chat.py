"""`fastdllm-ray chat`: a multi-turn terminal chat with a running server, through its OpenAI
API. Answers stream in as their blocks finish; after each one: NFE, tokens per forward, tokens/s
and the prompt tokens (those the server's prefix cache held too). /settings shows or changes the decoding settings, /reset forgets the conversation,
Ctrl-C stops an answer, Ctrl-D quits. It starts no server of its own."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Optional


def boolean(text: str) -> bool:
    """true or false (yes/no, 1/0); `off` is not false here: it means the server's default."""
    value = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}.get(text.lower())
    if value is None:
        raise ValueError(text)
    return value


# setting -> how a typed value is read; None or "off" means the server's default
SETTINGS = {"threshold": float, "factor": float, "block_length": int, "steps": int, "max_tokens": int,
            "temperature": float, "cache": str, "alg": str, "top_p": float, "top_k": int,
            "sub_block_length": int, "block_cache": boolean, "steps_per_block": int}
KINDS = {int: "a whole number", float: "a number", boolean: "true or false"}  # for messages
CACHE_MODES = ("dual", "prefix", "none")
HELP = ("/settings                 show the decoding settings\n"
        "/settings threshold=0.8 block_length=16   change some (name=off: the server's default)\n"
        "/reset                    forget the conversation\n"
        "/help                     this list;  Ctrl-C stops an answer, Ctrl-D quits")
NO_SERVER = """fastdllm-ray chat talks to a running server; it starts none. Start one in another shell:
    fastdllm-ray serve              # the shipped model at http://127.0.0.1:8000
then:
    fastdllm-ray chat --base-url http://127.0.0.1:8000"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("chat", help="chat with a running server in the terminal", description=__doc__)
    parser.add_argument("--base-url", help="the server, e.g. http://127.0.0.1:8000 (see `fastdllm-ray serve`)")
    parser.add_argument("--model", help="model name to send (default: the first the server lists)")
    parser.add_argument("--api-key", help="bearer key, when the server has keys")
    parser.add_argument("--system", help="a system message that opens the conversation")
    parser.add_argument("--cache", choices=CACHE_MODES, help="K/V cache mode (server default: dual)")
    rule = parser.add_mutually_exclusive_group()
    rule.add_argument("--threshold", type=float, help="commit every position at least this confident")
    rule.add_argument("--factor", type=float, help="Fast-dLLM's factor rule")
    parser.add_argument("--block-length", type=int, help="tokens per block (server default 32)")
    parser.add_argument("--steps", type=int, help="forwards for the fixed schedule (server default 128)")
    parser.add_argument("--max-tokens", type=int, help="answer tokens (server default: the model's)")
    parser.add_argument("--temperature", type=float)
    parser.add_argument("--alg", help="Dream models: entropy, maskgit_plus, topk_margin or confidence_threshold")
    parser.add_argument("--top-p", type=float, help="Dream models: nucleus of each position's distribution")
    parser.add_argument("--top-k", type=int, help="Dream models: candidates kept per position (server default 50)")
    parser.add_argument("--sub-block-length", type=int, help="Fast-dLLM v2 models: sub-block size (server default 8)")
    parser.add_argument("--block-cache", action=argparse.BooleanOptionalAction,
                        help="Fast-dLLM v2 models: keep the block's own K/V between forwards (server default off)")
    parser.add_argument("--steps-per-block", type=int,
                        help="LLaDA2.0 models: forwards a block may take (server default 32)")
    parser.set_defaults(func=run)


def request_body(model: str, messages: list[dict], settings: dict) -> dict:
    """The chat request for these messages: settings left at None are the server's defaults."""
    body = {"model": model, "messages": messages, "stream_options": {"include_usage": True}}
    for name, value in settings.items():
        if value is None:
            continue
        if name == "cache":
            body.update(use_cache=value != "none", use_dual_cache=value == "dual")
        else:
            body[name] = value
    return body


def change_settings(settings: dict, words: list[str]) -> dict:
    """`name=value` words applied to a copy of the settings; ValueError names the bad one."""
    changed = dict(settings)
    named = set()
    for word in words:
        name, sep, text = word.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or name not in SETTINGS:
            raise ValueError(f"{word!r}: expected name=value with name one of {', '.join(SETTINGS)}")
        value = text.strip()
        if value.lower() in ("off", "default", "") or (value.lower() == "none" and name != "cache"):
            changed[name] = None
            continue
        named.add(name)
        try:
            changed[name] = SETTINGS[name](value)
        except ValueError:
            raise ValueError(f"{name}: {value!r} is not {KINDS[SETTINGS[name]]}") from None
        if name == "cache" and changed[name] not in CACHE_MODES:
            raise ValueError(f"cache: {text!r} is not one of {', '.join(CACHE_MODES)}")
    if changed.get("threshold") is not None and changed.get("factor") is not None:
        if {"threshold", "factor"} <= named:
            raise ValueError("threshold and factor: set at most one of them")
        changed["threshold" if "factor" in named else "factor"] = None  # the one just set wins
    return changed


def describe(settings: dict) -> str:
    shown = [f"{name}={value}" for name, value in settings.items() if value is not None]
    return " ".join(shown) if shown else "the server's defaults"


def summary(usage: Optional[dict], seconds: float) -> str:
    if not usage or not usage.get("nfe"):
        return f"[{seconds:.2f} s]"
    tokens, nfe = usage["completion_tokens"], usage["nfe"]
    # prompt tokens the server's prefix cache held (models that share prefixes: a chat's next turn)
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    return (f"[NFE {nfe} · {tokens / nfe:.2f} tokens/forward · {tokens} tokens in {seconds:.2f} s · "
            f"{tokens / max(seconds, 1e-9):.1f} tokens/s · prompt {usage['prompt_tokens']} tokens"
            + (f", {cached} cached]" if cached else "]"))


class ChatSession:
    def __init__(self, client, model: str, settings: dict, system: Optional[str] = None) -> None:
        self.client = client
        self.model = model
        self.settings = settings
        self.opening = [{"role": "system", "content": system}] if system else []
        self.messages: list[dict] = list(self.opening)

    def command(self, line: str) -> None:
        name, *words = line.split()
        if name == "/reset":
            self.messages = list(self.opening)
            print("(conversation forgotten)")
        elif name == "/settings":
            if words:
                try:
                    self.settings = change_settings(self.settings, words)
                except ValueError as exc:
                    print(f"error: {exc}")
                    return
            print(f"settings: {describe(self.settings)}")
        elif name == "/help":
            print(HELP)
        else:
            print(f"unknown command {name}; /help lists them")

    def answer(self, text: str) -> None:
        """Streams one answer to the terminal; the turn joins the history only when it completed."""
        from fastdllm_ray.client import APIError

        messages = self.messages + [{"role": "user", "content": text}]
        chunks = self.client.stream_chat(request_body(self.model, messages, self.settings))
        started, content, usage = time.monotonic(), "", None
        try:
            for chunk in chunks:
                if chunk.get("choices") and chunk["choices"][0].get("delta", {}).get("role"):
                    sys.stdout.write(f"{self.model}> ")  # the request was accepted
                for choice in chunk.get("choices") or ():
                    delta = (choice.get("delta") or {}).get("content") or ""
                    content += delta
                    sys.stdout.write(delta)
                    sys.stdout.flush()
                usage = chunk.get("usage") or usage
        except APIError as exc:
            print(f"{chr(10) if content else ''}error: {exc}")
            return
        except KeyboardInterrupt:
            chunks.close()  # drops the connection: the server cancels the request
            print("\n(stopped)")
            return
        print(f"\n  {summary(usage, time.monotonic() - started)}")
        self.messages = messages + [{"role": "assistant", "content": content}]


def repl(session: ChatSession) -> None:
    while True:
        try:
            line = input("you> ").strip()
        except EOFError:  # Ctrl-D
            print()
            return
        except KeyboardInterrupt:  # Ctrl-C at the prompt drops the line, like a shell
            print()
            continue
        if not line:
            continue
        if line.startswith("/"):
            session.command(line)
        else:
            session.answer(line)


def run(args: argparse.Namespace) -> int:
    if not args.base_url:
        print(NO_SERVER, file=sys.stderr)
        return 2
    try:
        import readline  # noqa: F401  (line editing and history for input())
    except ImportError:
        pass
    from fastdllm_ray.client import APIError, Client

    client = Client(args.base_url, args.api_key)
    try:
        model = args.model or next(iter(client.models()), None)
    except APIError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if model is None:
        print(f"error: {args.base_url} serves no model", file=sys.stderr)
        return 1
    settings = {name: getattr(args, name) for name in SETTINGS}
    print(f"chatting with {model!r} at {args.base_url} ({describe(settings)}); /help for commands, Ctrl-D quits")
    repl(ChatSession(client, model, settings, args.system))
    return 0
