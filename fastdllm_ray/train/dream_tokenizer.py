"""The tiny Dream's tokenizer, in the form Dream-v0-Instruct-7B ships its own: a byte-level
BPE as vocab.json + merges.txt (no tokenizer.json), and a tokenizer_config.json that names
Dream's custom class (DreamTokenizer, auto_map) with its special tokens and ChatML template.
fastdllm-ray reads it as the Qwen2 BPE it is (model/checkpoint.py), never running code.

The BPE is learnt from the training split's chats, with Qwen2's pre-tokenizer (every digit
its own token, as Qwen2 and Dream split numbers), so words and the chat frame shrink to a
few tokens while arithmetic stays digit by digit.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers

# Dream's special tokens, in the order its vocabulary holds them after the BPE tokens
EOS, IM_START, IM_END, BOS, MASK = "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|beginoftext|>", "<|mask|>"
SPECIAL = (EOS, IM_START, IM_END, BOS, MASK)
SYSTEM = "You are a helpful assistant."
# ChatML, as Qwen2.5 and Dream use it: a default system turn, then each turn framed by
# <|im_start|>role ... <|im_end|>, and the assistant header for a generation prompt
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "{{ '<|im_start|>system\\n" + SYSTEM + "<|im_end|>\\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
# Qwen2's pre-tokenizer split (transformers' Qwen2Tokenizer applies the same)
QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")
VOCAB_SIZE = 512  # BPE tokens (the 256 bytes and the merges), special tokens after them


def training_texts(count: int = 20_000, seed: int = 0) -> list[str]:
    """What the BPE learns from: the training split's questions and answers, each chat in its
    frame (the system prompt and the role names, as often as a prompt holds them)."""
    from fastdllm_ray.train import chats, data

    texts = []
    for chat in chats.chats(count, seed, "train") + [chats.Chat((p,)) for p in data.problems(count, seed, "train")]:
        texts.append(f"system\n{SYSTEM}\n" + "".join(f"user\n{t.question}\nassistant\n{t.answer}\n"
                                                       for t in chat.turns))
    return texts


def qwen2_pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    """Qwen2's split (every digit its own piece), then the pieces' bytes as the byte-level alphabet."""
    return pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])


def train_bpe(texts: list[str], vocab_size: int = VOCAB_SIZE,
              pre_tokenizer: pre_tokenizers.PreTokenizer | None = None) -> Tokenizer:
    """A byte-level BPE of `vocab_size` tokens learnt from `texts`, split by `pre_tokenizer`
    (Qwen2's by default)."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = qwen2_pre_tokenizer() if pre_tokenizer is None else pre_tokenizer
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    bpe.train_from_iterator(texts, trainer)
    return bpe


V2_MASK = "|<MASK>|"  # Fast-dLLM v2's mask token (Qwen2.5's vocabulary + this one)
V2_SPECIAL = SPECIAL[:-1] + (V2_MASK,)  # Dream's ids, the mask spelt as v2's


def tokenizer_config(first_id: int, special: tuple[str, ...], v2: bool = False,
                     chat_template: str = CHAT_TEMPLATE) -> dict:
    """tokenizer_config.json's fields: `special` as added tokens numbered from `first_id`, and
    Dream's declaration, or with `v2` Fast-dLLM v2's (Qwen2Tokenizer, <|im_end|> as eos)."""
    added = {str(first_id + i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                                 "single_word": False, "special": True} for i, t in enumerate(special)}
    declared = {
        "add_bos_token": False, "add_prefix_space": False, "added_tokens_decoder": added,
        "additional_special_tokens": [IM_START, IM_END],
        "auto_map": {"AutoTokenizer": ["tokenization_dream.DreamTokenizer", None]},
        "bos_token": BOS, "chat_template": chat_template, "clean_up_tokenization_spaces": False,
        "eos_token": EOS, "errors": "replace", "mask_token": MASK, "model_max_length": 512,
        "pad_token": EOS, "split_special_tokens": False, "tokenizer_class": "DreamTokenizer", "unk_token": None,
    }
    if v2:  # as Fast_dLLM_v2_7B declares its tokenizer
        del declared["auto_map"], declared["mask_token"]
        declared.update(tokenizer_class="Qwen2Tokenizer", eos_token=IM_END, bos_token=None)
    return declared


def write_tokenizer(directory: str | Path, bpe: Tokenizer, v2: bool = False, special: tuple[str, ...] | None = None,
                    chat_template: str = CHAT_TEMPLATE, omit: tuple[str, ...] = ()) -> dict[str, int]:
    """Writes `bpe` as vocab.json + merges.txt and its tokenizer_config.json (tokenizer_config's
    fields, less those named in `omit`) into `directory`, removing a stale tokenizer.json and the
    like. `special` (by default SPECIAL, or V2_SPECIAL with `v2`) follows the BPE's tokens;
    returns their ids."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for stale in ("tokenizer.json", "special_tokens_map.json", "chat_template.jinja"):
        (directory / stale).unlink(missing_ok=True)
    bpe.model.save(str(directory))  # vocab.json, merges.txt
    n_bpe = len(json.loads((directory / "vocab.json").read_text()))
    special = special or (V2_SPECIAL if v2 else SPECIAL)
    declared = tokenizer_config(n_bpe, special, v2, chat_template)
    for key in omit:
        del declared[key]
    (directory / "tokenizer_config.json").write_text(json.dumps(declared, indent=2) + "\n")
    return {token: n_bpe + i for i, token in enumerate(special)}


def save_tokenizer(directory: str | Path, texts: list[str] | None = None, v2: bool = False) -> None:
    """Writes vocab.json, merges.txt and tokenizer_config.json into `directory`: Dream's files,
    or with `v2` Fast-dLLM v2's (the same ids, the mask spelt |<MASK>|, Qwen2Tokenizer, the turn's
    end <|im_end|> as eos), so a v2 model can start from the tiny Dream's weights."""
    write_tokenizer(directory, train_bpe(training_texts() if texts is None else texts), v2)
