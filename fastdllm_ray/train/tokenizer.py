"""The shipped model's tokenizer: one token per printable ASCII character (and newline),
plus LLaDA's special tokens and its chat template, saved as tokenizer.json so that
`AutoTokenizer.from_pretrained` loads it like the real checkpoint's.

Character level keeps the vocabulary at ~100 ids (so the embedding and output head stay
a few hundred KB) and makes arithmetic digit by digit, which a tiny model learns fast.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer, decoders
from tokenizers.models import BPE

BOS = "<|startoftext|>"
EOS = "<|endoftext|>"
EOT = "<|eot_id|>"
START_HEADER = "<|start_header_id|>"
END_HEADER = "<|end_header_id|>"
MASK = "<|mdm_mask|>"
PAD = "<|pad|>"
UNK = "<|unk|>"
SPECIAL_TOKENS = (BOS, EOS, START_HEADER, END_HEADER, EOT, MASK, PAD, UNK)

# newline first, then the 95 printable ASCII characters (space .. tilde)
CHARACTERS = "\n" + "".join(chr(c) for c in range(32, 127))

# The real LLaDA-Instruct template's shape: BOS once, each turn as header + content + EOT,
# and the assistant header when a generation prompt is asked for.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)


def user_prompt(question: str) -> str:
    """The text CHAT_TEMPLATE renders for one user turn with a generation prompt."""
    return (f"{BOS}{START_HEADER}user{END_HEADER}\n\n{question.strip()}{EOT}"
            f"{START_HEADER}assistant{END_HEADER}\n\n")


def build_tokenizer(special_tokens: tuple[str, ...] = SPECIAL_TOKENS, unk: str = UNK) -> Tokenizer:
    """Characters take ids 0..95, the special tokens the ids after them."""
    vocab = {ch: i for i, ch in enumerate(CHARACTERS)}
    for token in special_tokens:
        vocab[token] = len(vocab)
    # a BPE model with no merges splits text into single characters, and no pre-tokenizer
    # means spaces and newlines are ordinary characters
    tokenizer = Tokenizer(BPE(vocab=vocab, merges=[], unk_token=unk, fuse_unk=True))
    tokenizer.add_special_tokens(list(special_tokens))
    tokenizer.decoder = decoders.Fuse()  # characters join with nothing in between
    return tokenizer


def save_tokenizer(directory: str | Path) -> None:
    """Writes tokenizer.json, tokenizer_config.json and special_tokens_map.json."""
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(
        tokenizer_object=build_tokenizer(),
        bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK, mask_token=MASK,
        additional_special_tokens=[START_HEADER, END_HEADER, EOT],
        clean_up_tokenization_spaces=False,
        model_max_length=512,
    )
    fast.save_pretrained(str(directory))
    # the real checkpoint keeps its template inside tokenizer_config.json and names the
    # generic fast class, which every transformers version (4.x and 5.x) can load
    directory = Path(directory)
    config_path = directory / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config.pop("extra_special_tokens", None)
    config.update(tokenizer_class="PreTrainedTokenizerFast", chat_template=CHAT_TEMPLATE,
                  additional_special_tokens=[START_HEADER, END_HEADER, EOT])
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    (directory / "chat_template.jinja").unlink(missing_ok=True)


def token_id(token: str) -> int:
    return build_tokenizer().token_to_id(token)
