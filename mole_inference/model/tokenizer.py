"""Instruction tokenizers: the user's local Hugging Face tokenizer, or a byte-level one needing no download."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import torch

from mole_inference.errors import ConfigError


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


def load_tokenizer(path: str | None, vocab_size: int) -> ByteTokenizer | HFTokenizer:
    """The tokenizer at `path`, or the byte tokenizer; checks it fits the embedding table."""
    tok = HFTokenizer(path) if path else ByteTokenizer()
    if tok.vocab_size > vocab_size:
        raise ConfigError(f"llm.vocab_size={vocab_size}: tokenizer needs at least {tok.vocab_size}")
    return tok


def tokenize_batch(tok: ByteTokenizer | HFTokenizer, texts: list[str], max_len: int
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad (or truncate) each instruction to `max_len`: ids (B, T) long and mask (B, T) bool."""
    ids = torch.full((len(texts), max_len), tok.pad_id, dtype=torch.long)
    mask = torch.zeros((len(texts), max_len), dtype=torch.bool)
    for i, text in enumerate(texts):
        row = tok.encode(text)[:max_len]
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = True
    return ids, mask
