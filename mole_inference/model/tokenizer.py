"""Instruction tokenizers: the user's local Hugging Face tokenizer, or a built-in one needing no download.

Built-in: `byte` (UTF-8 bytes) or `word` (hashed words, for the tiny presets: a colour is one token, not four
bytes, and an instruction is a dozen tokens, not fifty). The 7B presets use LLaMA's own tokenizer folder.
"""

from __future__ import annotations

import logging
import re
import zlib
from pathlib import Path
from typing import Protocol

import torch

from mole_inference.errors import ConfigError, InputError

log = logging.getLogger(__name__)

class Tokenizer(Protocol):
    """Turns an instruction into a fixed-length id row and its padding mask."""

    vocab_size: int

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, starting with BOS (the router's [CLS], Eq. 11)."""
        ...


class ByteTokenizer:
    """UTF-8 bytes shifted by the special ids: 0 = pad, 1 = BOS, 2 = EOS, 3 = unused, byte b -> b + 4."""

    pad_id, bos_id, eos_id = 0, 1, 2
    offset = 4
    vocab_size = 256 + offset

    def encode(self, text: str) -> list[int]:
        """BOS followed by the bytes of the lower-cased, stripped instruction."""
        return [self.bos_id] + [b + self.offset for b in text.strip().lower().encode("utf-8")]


class WordTokenizer:
    """Lower-cased words and punctuation marks hashed into the embedding table (the hashing trick).

    Ids: 0 = pad, 1 = BOS, 2 = EOS, 3 = unused, a word w -> 4 + crc32(w) mod (vocab_size - 4). No vocabulary file:
    any word gets an id, and two words share one only on a hash collision (none among the sim's instructions at
    the tiny presets' vocab_size, which a test checks).
    """

    pad_id, bos_id, eos_id = 0, 1, 2
    offset = 4
    _split = re.compile(r"[^\W_]+|[^\w\s]", re.UNICODE)

    def __init__(self, vocab_size: int) -> None:
        if vocab_size <= self.offset + 1:
            raise ConfigError(f"llm.vocab_size={vocab_size}: the word tokenizer needs more than {self.offset + 1}")
        self.vocab_size = vocab_size

    def words(self, text: str) -> list[str]:
        """The tokens of `text` as strings (lower-cased words and punctuation marks)."""
        return self._split.findall(text.strip().lower())

    def encode(self, text: str) -> list[int]:
        """BOS followed by one id per word."""
        n = self.vocab_size - self.offset
        return [self.bos_id] + [self.offset + zlib.crc32(w.encode("utf-8")) % n for w in self.words(text)]


class HFTokenizer:
    """A tokenizer folder on local disk (e.g. LLaMA-2's), loaded without network access."""

    def __init__(self, path: str | Path) -> None:
        from transformers import AutoTokenizer

        if not Path(path).is_dir():
            raise ConfigError(f"llm.tokenizer={str(path)!r}: not a folder")
        self._tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        self.vocab_size = len(self._tok)
        self.pad_id = self._tok.pad_token_id if self._tok.pad_token_id is not None else 0

    def encode(self, text: str) -> list[int]:
        """Ids with the tokenizer's BOS."""
        return list(self._tok(text.strip(), add_special_tokens=True)["input_ids"])


AnyTokenizer = ByteTokenizer | WordTokenizer | HFTokenizer


def load_tokenizer(path: str | None, vocab_size: int, builtin: str = "byte") -> AnyTokenizer:
    """The tokenizer at `path`, else the built-in `builtin` ("byte" or "word"); checks it fits the embeddings."""
    if path:
        tok: AnyTokenizer = HFTokenizer(path)
    elif builtin == "word":
        tok = WordTokenizer(vocab_size)
    elif builtin == "byte":
        tok = ByteTokenizer()
    else:
        raise ConfigError(f"llm.text_tokenizer={builtin!r}: must be 'byte' or 'word'")
    if tok.vocab_size > vocab_size:
        raise ConfigError(f"llm.vocab_size={vocab_size}: tokenizer needs at least {tok.vocab_size}")
    return tok


def check_lengths(tok: AnyTokenizer, texts: list[str], max_len: int) -> None:
    """InputError naming the longest instruction when any of `texts` has more than `max_len` tokens.

    Training must never see a cut instruction: "put the yellow cube on top of the green cube" cut to 32 bytes
    loses the second colour, and the model cannot learn what it never sees.
    """
    lengths = [len(tok.encode(t)) for t in texts]
    if lengths and max(lengths) > max_len:
        worst = texts[lengths.index(max(lengths))]
        raise InputError(f"instruction {worst!r} has {max(lengths)} tokens but llm.max_text_tokens={max_len}: "
                         f"raise llm.max_text_tokens to at least {max(lengths)} (or use llm.text_tokenizer: word)")


def tokenize_batch(tok: AnyTokenizer, texts: list[str], max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad (or truncate, with a warning) each instruction to `max_len`: ids (B, T) long, mask (B, T) bool."""
    ids = torch.full((len(texts), max_len), tok.pad_id, dtype=torch.long)
    mask = torch.zeros((len(texts), max_len), dtype=torch.bool)
    for i, text in enumerate(texts):
        row = tok.encode(text)
        if len(row) > max_len:
            log.warning("instruction %r has %d tokens; the model reads only the first %d (llm.max_text_tokens)",
                        text, len(row), max_len)
            row = row[:max_len]
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = True
    return ids, mask
