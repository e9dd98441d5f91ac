"""CLIP tokenizers: load a directory's own files through transformers, or build a small one.

Loading never touches a hub (local_files_only). Building makes a byte-level
BPE vocabulary in OpenAI CLIP's format (every byte, alone and word-final,
plus whole-word merges for a given word list), so any text tokenises,
unknown words and rare tokens like "sks" included; transformers' CLIPTokenizer
reads the files it writes.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from absl import logging

BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def _auto_tokenizer():
  """transformers' AutoTokenizer, imported without its advice that no PyTorch is installed (we use it for tokenizers
  only); the environment is left as it was."""
  saved = os.environ.get("TRANSFORMERS_NO_ADVISORY_WARNINGS")
  os.environ["TRANSFORMERS_NO_ADVISORY_WARNINGS"] = "1"
  try:
    from transformers import AutoTokenizer  # noqa: PLC0415 - keeps `import muse_styledrop` light
  finally:
    if saved is None:
      del os.environ["TRANSFORMERS_NO_ADVISORY_WARNINGS"]
    else:
      os.environ["TRANSFORMERS_NO_ADVISORY_WARNINGS"] = saved
  return AutoTokenizer


def _bytes_to_unicode() -> dict[int, str]:
  """GPT-2/CLIP's reversible byte -> printable-character table."""
  keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
  chars, extra = {}, 0
  for b in range(256):
    if b in keep:
      chars[b] = chr(b)
    else:
      chars[b] = chr(256 + extra)
      extra += 1
  return chars


def _bpe(symbols: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
  """CLIP's byte-pair encoding of a word: merge the lowest-ranked adjacent pair (every occurrence) while one applies."""
  while len(symbols) > 1:
    pair = min(zip(symbols, symbols[1:]), key=lambda p: ranks.get(p, len(ranks)))
    if pair not in ranks:
      break
    merged, i = [], 0
    while i < len(symbols):
      if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
        merged.append(symbols[i] + symbols[i + 1])
        i += 2
      else:
        merged.append(symbols[i])
        i += 1
    symbols = merged
  return symbols


def build_clip_tokenizer(words: Iterable[str], out_dir: Path, max_length: int = 77) -> None:
  """Write a CLIP tokenizer whose vocabulary holds every byte and each of `words` as one token.

  BPE applies merges by rank, not per word, so one word's merges can split another ("art"'s ('a', 'r') would cut
  "large" into l-ar-g-e). Each word therefore gets its merges after the words before it: its pieces under the merges
  so far, joined left to right by new, higher-ranked merges, which never apply to an earlier word (at every step of
  an earlier word's encoding a lower-ranked merge of its own is available).
  """
  from transformers import CLIPTokenizer  # noqa: PLC0415 - only the builder needs it at import

  table = _bytes_to_unicode()
  vocab: dict[str, int] = {}
  for c in list(table.values()) + [c + "</w>" for c in table.values()]:
    vocab.setdefault(c, len(vocab))
  ranks: dict[tuple[str, str], int] = {}
  for word in sorted({w.lower() for w in words}):
    symbols = [table[b] for b in word.encode("utf-8")]
    symbols[-1] += "</w>"
    pieces = _bpe(symbols, ranks)
    while len(pieces) > 1:
      ranks[(pieces[0], pieces[1])] = len(ranks)
      vocab.setdefault(pieces[0] + pieces[1], len(vocab))
      pieces = [pieces[0] + pieces[1], *pieces[2:]]
  vocab[BOS] = len(vocab)
  vocab[EOS] = len(vocab)
  tok = CLIPTokenizer(vocab=vocab, merges=list(ranks), model_max_length=max_length)
  out_dir = Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  tok.save_pretrained(out_dir)


class Tokenizer:
  """A directory's CLIP tokenizer, padding/truncating to the model's length as aMUSEd's pipeline does."""

  def __init__(self, folder: Path):
    folder = Path(folder)
    if not folder.is_dir():
      raise FileNotFoundError(f"tokenizer directory {folder} does not exist; the model directory is incomplete")
    try:
      self._tok = _auto_tokenizer().from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as e:
      raise ValueError(
        f"cannot load the tokenizer in {folder} ({e}); it needs vocab.json and merges.txt or tokenizer.json"
      ) from e
    self.max_length = int(min(self._tok.model_max_length, 77))

  def __call__(self, texts: list[str]) -> np.ndarray:
    """Token ids (N, max_length), int32."""
    texts = list(texts)
    for text, whole in zip(texts, self._tok(texts, truncation=False).input_ids, strict=True):
      if len(whole) > self.max_length:
        logging.warning(
          "the prompt %r is %d tokens; the model reads its first %d and the rest is cut",
          text,
          len(whole),
          self.max_length,
        )
    ids = self._tok(texts, padding="max_length", truncation=True, max_length=self.max_length).input_ids
    return np.asarray(ids, np.int32)

  def save(self, folder: Path) -> None:
    """Write the tokenizer's files (transformers' own format) into `folder`."""
    self._tok.save_pretrained(str(folder))

  @property
  def vocab_size(self) -> int:
    return len(self._tok)
