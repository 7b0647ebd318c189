"""Text data for the VAE: the synthetic toy problem, line-per-sentence corpora, vocabulary, padded batches.

Token conventions: a sentence is a list of token ids *without* specials. The encoder reads the sentence; the
decoder reads ``<bos> w_1 .. w_n`` and predicts ``w_1 .. w_n <eos>`` (n + 1 predictions, so word counts for
perplexity include the end token). ``<pad>`` is id 0 and never predicted.

- :func:`toy_corpus`: the seed's synthetic problem (§2.4): 10 sequences of 10 binary tokens, sequence i is the
  one-hot vector with its 1 at position i; label = i. Train = validation = test (the task is to separate the
  10 sequences in a 2-D latent space).
- :func:`load_ptb`, :func:`load_yelp`: PTB and Yelp (``dev.0.txt`` negative, ``dev.1.txt`` positive; label =
  file suffix) from a data directory; tokenised on whitespace, sentences longer than ``max_len`` tokens dropped;
  the vocabulary is built on the training split only (``min_freq``; rarer and unseen words become ``<unk>``).
  PTB with ``train.txt`` present uses the official split (``train.txt``/``valid.txt``/``test.txt``, as the
  thesis does); without it (the shared development data holds only ``valid.txt`` and ``test.txt``) those two
  files are pooled and split into train/val/test by a seeded permutation, as is Yelp.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from search_space.registry import Registry
from trainables.text.vocab import SPECIALS as _SPECIALS
from trainables.text.vocab import Vocab, teacher_forcing

PAD, BOS, EOS, UNK = (_SPECIALS[role] for role in ("pad", "bos", "eos", "unk"))
SPECIALS = (PAD, BOS, EOS, UNK)


@dataclass
class TextSplit:
    """Sentences as id lists (no specials) and optional integer labels (``-1``: unlabelled)."""

    sentences: list[list[int]]
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.sentences)

    @property
    def n_words(self) -> int:
        """Predicted tokens: words plus one ``<eos>`` per sentence (the PPL denominator)."""
        return sum(len(s) + 1 for s in self.sentences)


@dataclass
class TextData:
    """A corpus ready for training: vocabulary and train/val/test splits."""

    name: str
    vocab: Vocab
    train: TextSplit
    val: TextSplit
    test: TextSplit
    max_len: int

    def describe(self) -> str:
        return (f"{self.name}: vocab {len(self.vocab)}, train/val/test {len(self.train)}/{len(self.val)}/"
                f"{len(self.test)} sentences, max_len {self.max_len}")


def tokenize(line: str) -> list[str]:
    """Whitespace tokenisation (the corpora are pre-tokenised)."""
    return line.split()


def read_sentences(path: str | Path, max_len: int) -> tuple[list[list[str]], int]:
    """Non-empty lines of ``path`` as token lists with at most ``max_len`` tokens; returns (kept, dropped)."""
    kept, dropped = [], 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            tokens = tokenize(line)
            if not tokens:
                continue
            if len(tokens) > max_len:
                dropped += 1
                continue
            kept.append(tokens)
    return kept, dropped


def split_indices(n: int, val_frac: float, test_frac: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded disjoint (train, val, test) index arrays covering ``range(n)``; sizes round to nearest."""
    if not (0.0 <= val_frac < 1.0 and 0.0 <= test_frac < 1.0 and val_frac + test_frac < 1.0):
        raise ValueError(f"split: need 0 <= val_frac, test_frac and val_frac + test_frac < 1, "
                         f"got {val_frac}, {test_frac}")
    perm = np.random.default_rng(seed).permutation(n)
    n_test, n_val = round(n * test_frac), round(n * val_frac)
    return np.sort(perm[n_test + n_val:]), np.sort(perm[n_test:n_test + n_val]), np.sort(perm[:n_test])


def build_corpus(name: str, sentences: list[list[str]], labels: np.ndarray, *, max_len: int, min_freq: int,
                 val_frac: float, test_frac: float, seed: int,
                 indices: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> TextData:
    """Split tokenised ``sentences`` (seeded, or the given ``(train, val, test)`` index arrays), build the
    vocabulary on train, encode every split."""
    tr, va, te = indices if indices is not None else split_indices(len(sentences), val_frac, test_frac, seed)
    vocab = Vocab.build((sentences[i] for i in tr), min_freq)

    def part(idx: np.ndarray) -> TextSplit:
        return TextSplit([vocab.encode(sentences[i]) for i in idx], labels[idx].astype(np.int64))

    return TextData(name, vocab, part(tr), part(va), part(te), max_len)


def _require(paths: list[Path]) -> None:
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"missing data file(s): {', '.join(missing)}")


def load_ptb(data_dir: str | Path, *, max_len: int = 40, min_freq: int = 2, val_frac: float = 0.1,
             test_frac: float = 0.1, seed: int = 0) -> TextData:
    """PTB from ``data_dir/ptb`` (labels -1).

    With ``train.txt`` there: the official split, train/val/test = ``train.txt``/``valid.txt``/``test.txt``
    (``val_frac``, ``test_frac`` and ``seed`` unused). Without it: ``valid.txt`` and ``test.txt`` pooled, then
    split by a permutation seeded with ``seed`` (fractions ``val_frac``, ``test_frac``)."""
    root = Path(data_dir) / "ptb"
    if (root / "train.txt").is_file():
        paths = [root / f for f in ("train.txt", "valid.txt", "test.txt")]
        _require(paths)
        splits = [read_sentences(p, max_len)[0] for p in paths]
        sentences = [s for split in splits for s in split]
        bounds = np.cumsum([0, *(len(split) for split in splits)])
        indices = tuple(np.arange(bounds[i], bounds[i + 1]) for i in range(3))
        return build_corpus("ptb", sentences, np.full(len(sentences), -1), max_len=max_len, min_freq=min_freq,
                            val_frac=val_frac, test_frac=test_frac, seed=seed, indices=indices)
    paths = [root / f for f in ("valid.txt", "test.txt")]
    _require(paths)
    sentences = [s for p in paths for s in read_sentences(p, max_len)[0]]
    return build_corpus("ptb", sentences, np.full(len(sentences), -1), max_len=max_len, min_freq=min_freq,
                        val_frac=val_frac, test_frac=test_frac, seed=seed)


def load_yelp(data_dir: str | Path, *, max_len: int = 15, min_freq: int = 2, val_frac: float = 0.05,
              test_frac: float = 0.1, seed: int = 0, limit: int | None = None) -> TextData:
    """Yelp sentiment from ``data_dir/yelp-sentiment/dev.{0,1}.txt`` (label 0 negative, 1 positive).

    ``limit``: keep a seeded random subset of that many sentences before splitting (smaller budgets)."""
    paths = [Path(data_dir) / "yelp-sentiment" / f"dev.{k}.txt" for k in (0, 1)]
    _require(paths)
    sentences, labels = [], []
    for label, p in enumerate(paths):
        kept = read_sentences(p, max_len)[0]
        sentences += kept
        labels += [label] * len(kept)
    labels_arr = np.asarray(labels, dtype=np.int64)
    if limit is not None and limit < len(sentences):
        keep = np.sort(np.random.default_rng(seed + 1).choice(len(sentences), limit, replace=False))
        sentences, labels_arr = [sentences[i] for i in keep], labels_arr[keep]
    return build_corpus("yelp", sentences, labels_arr, max_len=max_len, min_freq=min_freq,
                        val_frac=val_frac, test_frac=test_frac, seed=seed)


def toy_corpus(n: int = 10, copies: int = 1) -> TextData:
    """The synthetic problem: ``n`` sequences of ``n`` tokens ``"0"``/``"1"``, sequence i one-hot at i.

    The training split holds each sequence ``copies`` times (more updates per epoch); validation and test
    hold each once."""
    if n < 2 or copies < 1:
        raise ValueError(f"toy corpus: need n >= 2 and copies >= 1, got n={n}, copies={copies}")
    vocab = Vocab(["0", "1"])
    ids = [vocab.encode(["1" if j == i else "0" for j in range(n)]) for i in range(n)]
    labels = np.arange(n, dtype=np.int64)
    once = TextSplit(ids, labels)
    train = TextSplit([list(s) for _ in range(copies) for s in ids], np.tile(labels, copies))
    return TextData("toy", vocab, train, once, once, n)


def length_bucketed_batches(lengths: Sequence[int], batch_size: int, *, shuffle: bool,
                            seed: int = 0) -> list[np.ndarray]:
    """Index batches of sentences of similar length: sort by length (random tie-break when ``shuffle``),
    cut into chunks of ``batch_size``, shuffle the chunk order (seeded). Every index appears exactly once."""
    lengths = np.asarray(lengths)
    rng = np.random.default_rng(seed)
    tie = rng.random(len(lengths)) if shuffle else np.arange(len(lengths))
    order = np.lexsort((tie, lengths))
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if shuffle:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


@dataclass
class Batch:
    """Padded tensors of one batch (B sentences, L = longest sentence):

    ``src`` [B, L] words (pad 0), ``lengths`` [B] words per sentence, ``dec_in`` [B, L+1] = ``<bos>`` + words,
    ``target`` [B, L+1] = words + ``<eos>`` (pad 0 after), ``mask`` [B, L+1] float, 1 on predicted tokens."""

    src: torch.Tensor
    lengths: torch.Tensor
    dec_in: torch.Tensor
    target: torch.Tensor
    mask: torch.Tensor

    @property
    def n_tokens(self) -> int:
        return int(self.mask.sum().item())


def make_batch(sentences: Sequence[Sequence[int]], vocab: Vocab, device: torch.device | str = "cpu") -> Batch:
    """Pad id lists into a :class:`Batch` (every sentence needs at least one word)."""
    src, lengths, dec_in, target = teacher_forcing(sentences, vocab)
    mask = (target != vocab.pad).float()
    return Batch(src.to(device), lengths.to(device), dec_in.to(device), target.to(device), mask.to(device))


def batches(split: TextSplit, vocab: Vocab, batch_size: int, *, shuffle: bool, seed: int = 0,
            device: torch.device | str = "cpu") -> list[Batch]:
    """All batches of ``split`` (length-bucketed), as tensors on ``device``."""
    idx = length_bucketed_batches([len(s) for s in split.sentences], batch_size, shuffle=shuffle, seed=seed)
    return [make_batch([split.sentences[i] for i in b], vocab, device) for b in idx]


def shard_batches(split: TextSplit, vocab: Vocab, batch_size: int, *, rank: int, world: int, shuffle: bool,
                  seed: int = 0, device: torch.device | str = "cpu") -> list[tuple[Batch, float]]:
    """This rank's part of every global batch of :func:`batches` (same seed = same global batches on every
    rank), as ``(batch, share)``: rank r takes rows r, r + world, ... of the length-sorted global batch, and
    ``share`` = its rows / the global batch's rows, so ``Σ_ranks share · mean_rank = global mean``. A global
    batch with fewer rows than ranks gives the rankless ranks a copy of one row with share 0 (every rank
    must take part in each gradient all-reduce). ``world == 1`` returns :func:`batches` with share 1."""
    if world == 1:
        return [(b, 1.0) for b in batches(split, vocab, batch_size, shuffle=shuffle, seed=seed, device=device)]
    idx = length_bucketed_batches([len(s) for s in split.sentences], batch_size, shuffle=shuffle, seed=seed)
    out = []
    for b in idx:
        rows = b[rank::world] if rank < len(b) else b[:1]
        share = len(rows) / len(b) if rank < len(b) else 0.0
        out.append((make_batch([split.sentences[i] for i in rows], vocab, device), share))
    return out


def load_toy(data_dir: str | Path | None = None, *, n: int = 10, copies: int = 1) -> TextData:
    """:func:`toy_corpus` behind the loader signature of :data:`DATASETS` (``data_dir`` is ignored)."""
    return toy_corpus(n, copies)


#: name -> ``loader(data_dir, **options) -> TextData``.
DATASETS = Registry("text dataset")
DATASETS.register("toy")(load_toy)
DATASETS.register("ptb")(load_ptb)
DATASETS.register("yelp")(load_yelp)


def load_text_data(name: str, data_dir: str | Path | None = None, **options) -> TextData:
    """The registered dataset ``name`` (any error: a one-line ``RegistryError``)."""
    return DATASETS.build(name, data_dir, **options)
