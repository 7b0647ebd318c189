"""The token vocabulary the text VAE and the dialog CVAE share: token <-> id over special tokens, then words.

Special tokens are given by role (``pad``, ``bos``, ``eos``, ``unk``), in id order; ``unk`` is required, a role
that is missing has id −1. Words follow by decreasing frequency (ties alphabetical), so a vocabulary is a
deterministic function of the training text.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

import torch

#: The text VAE's special tokens by role, in id order: ``<pad>`` = 0, ``<bos>``, ``<eos>``, ``<unk>``.
SPECIALS = {"pad": "<pad>", "bos": "<bos>", "eos": "<eos>", "unk": "<unk>"}


class Vocab:
    """token <-> id over ``specials`` (role -> token, in id order) then ``words`` (duplicates of a special
    skipped); ``pad``, ``bos``, ``eos``, ``unk`` are the ids of those roles (−1 for a role ``specials`` lacks)."""

    def __init__(self, words: Iterable[str], specials: Mapping[str, str] = SPECIALS) -> None:
        tokens = list(specials.values())
        self.itos: list[str] = tokens + [w for w in words if w not in tokens]
        self.stoi = {w: i for i, w in enumerate(self.itos)}
        self.unk = self.stoi[specials["unk"]]
        self.pad, self.bos, self.eos = (self.stoi[specials[r]] if r in specials else -1 for r in ("pad", "bos", "eos"))

    @classmethod
    def build(cls, sentences: Iterable[Sequence[str]], min_freq: int = 1,
              specials: Mapping[str, str] = SPECIALS) -> Vocab:
        """Words occurring at least ``min_freq`` times in ``sentences`` (lists of tokens), by decreasing count
        (ties alphabetical): deterministic."""
        counts = Counter(w for s in sentences for w in s)
        return cls((w for w, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if c >= min_freq), specials)

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, tokens: Sequence[str]) -> list[int]:
        return [self.stoi.get(w, self.unk) for w in tokens]

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Tokens of ``ids``, stopping at the first end token and skipping padding and the start token."""
        out = []
        for i in ids:
            if i == self.eos:
                break
            if i not in (self.pad, self.bos):
                out.append(self.itos[i])
        return out


def teacher_forcing(sequences: Sequence[Sequence[int]], vocab: Vocab) -> tuple[torch.Tensor, ...]:
    """The padded decoder tensors of id lists (no specials, each at least one word; L = the longest):
    ``(words [B, L], lengths [B], dec_in [B, L+1] = <bos> + words, target [B, L+1] = words + <eos>)``, padded
    with ``vocab.pad``."""
    b, length = len(sequences), max(len(s) for s in sequences)
    words = torch.full((b, length), vocab.pad, dtype=torch.long)
    dec_in = torch.full((b, length + 1), vocab.pad, dtype=torch.long)
    target = torch.full((b, length + 1), vocab.pad, dtype=torch.long)
    for i, s in enumerate(sequences):
        n = len(s)
        words[i, :n] = torch.as_tensor(s)
        dec_in[i, 0] = vocab.bos
        dec_in[i, 1:n + 1] = words[i, :n]
        target[i, :n] = words[i, :n]
        target[i, n] = vocab.eos
    return words, torch.as_tensor([len(s) for s in sequences], dtype=torch.long), dec_in, target
