"""Switchboard dialogs for the conditional VAE: context–response pairs, vocabulary, padded batches.

Input: the JSON-lines format of the public kgCVAE code (Zhao et al. 2017), one dialog per line with ``topic``,
``prompt``, speaker metadata ``A``/``B`` and ``utts`` = ``[[speaker, text, [dialog_act, sentiment]], ...]``.
Text is lower-cased and split into word and punctuation runs (regex ``\\w+|[^\\w\\s]+``, kgCVAE's
``WordPunctTokenizer``); an utterance longer than ``max_utt_len`` words is cut to its first ``max_utt_len``.

Pairs: every utterance i >= 1 of a dialog is a *response*; its *context* is the up to ``context_window``
utterances before it, each with a speaker feature ``same`` (1 when the context utterance's speaker is the
responder, 0 for the other speaker); its *act* is the response's dialog act.

Splits are by dialog, never by utterance: ``<data_dir>/swda/{train,valid,test}.jsonl`` when ``train.jsonl``
exists (the full corpus), else the dialogs of ``valid.jsonl`` alone (the shared development data) split into
train/val/test by a permutation seeded with ``seed`` (fractions ``val_frac``, ``test_frac``). The word
vocabulary (``<pad>`` = 0, ``<unk>``, ``<s>``, ``</s>``, then words seen at least ``min_freq`` times, by
decreasing frequency) and the act vocabulary (``<unk>`` = 0 for acts unseen in training, then acts by
frequency) come from the training dialogs only.

Token conventions: an utterance is a list of word ids without specials. The decoder reads ``<s> w_1 .. w_n`` and
predicts ``w_1 .. w_n </s>`` (n + 1 predicted tokens: the perplexity denominator).
"""
from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from trainables.text.data import split_indices
from trainables.text.vocab import Vocab, teacher_forcing

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<s>", "</s>"
#: Special tokens by role, in id order (:class:`trainables.text.vocab.Vocab`); dialog acts have ``<unk>`` alone.
SPECIALS = {"pad": PAD, "unk": UNK, "bos": BOS, "eos": EOS}
ACT_SPECIALS = {"unk": UNK}
_TOKEN = re.compile(r"\w+|[^\w\s]+")


def tokenize(text: str) -> list[str]:
    """Lower-cased word and punctuation runs: ``"I don't"`` -> ``["i", "don", "'", "t"]``."""
    return _TOKEN.findall(text.lower())


@dataclass
class Utterance:
    speaker: str
    words: list[str]  # tokens, cut at max_utt_len
    act: str


@dataclass
class Dialog:
    topic: str
    utts: list[Utterance]


@dataclass
class DialogSplit:
    """The utterances of some dialogs, flattened, and the pairs over them.

    ``utts`` [U] word-id lists, ``words`` [U] their tokens (references keep words the vocabulary maps to
    ``<unk>``), ``speakers`` [U], ``acts`` [U] act ids, ``dialog`` [U] index of the utterance's dialog in the
    source file order; ``pairs`` [P, 2] ``(first, last)``: response ``utts[last]``, context
    ``utts[first:last]`` (same dialog, ``1 <= last - first <= context_window``)."""

    utts: list[list[int]]
    words: list[list[str]]
    speakers: list[str]
    acts: np.ndarray
    dialog: np.ndarray
    pairs: np.ndarray

    def __len__(self) -> int:
        return len(self.pairs)

    @property
    def n_words(self) -> int:
        """Predicted tokens over all responses: words plus one ``</s>`` each (the PPL denominator)."""
        return sum(len(self.utts[last]) + 1 for _, last in self.pairs)

    def context(self, i: int) -> tuple[list[list[int]], list[int]]:
        """Pair ``i``'s context utterances (oldest first) and their ``same`` features (1: the responder)."""
        first, last = self.pairs[i]
        who = self.speakers[last]
        return self.utts[first:last], [int(self.speakers[j] == who) for j in range(first, last)]


@dataclass
class DialogData:
    """Vocabularies and the three splits; ``context_window`` and ``max_utt_len`` as built."""

    vocab: Vocab
    acts: Vocab
    train: DialogSplit
    val: DialogSplit
    test: DialogSplit
    context_window: int
    max_utt_len: int
    source: str  # how the splits were made, in words

    def describe(self) -> str:
        d = {k: len(set(getattr(self, k).dialog.tolist())) for k in ("train", "val", "test")}
        return (f"swda: vocab {len(self.vocab)}, {len(self.acts) - 1} dialog acts, train/val/test "
                f"{d['train']}/{d['val']}/{d['test']} dialogs, {len(self.train)}/{len(self.val)}/{len(self.test)} "
                f"pairs, context window {self.context_window}, max_utt_len {self.max_utt_len} ({self.source})")


def read_dialogs(path: str | Path, max_utt_len: int) -> list[Dialog]:
    """Dialogs of one JSON-lines file; a missing file or a malformed line is a one-line error
    (``FileNotFoundError`` / ``ValueError`` naming the file and line). Utterances without a token are skipped."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing data file: {path}")
    dialogs = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
                utts = [Utterance(str(s), tokenize(t)[:max_utt_len], str(meta[0])) for s, t, meta in raw["utts"]]
                dialogs.append(Dialog(str(raw.get("topic", "")), [u for u in utts if u.words]))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError, IndexError) as err:
                raise ValueError(f"{path}:{n}: not a kgCVAE dialog line ({type(err).__name__}: "
                                 f"{' '.join(str(err).split())[:120]})") from None
    if not dialogs:
        raise ValueError(f"{path}: no dialogs")
    return dialogs


def make_split(dialogs: Sequence[Dialog], ids: Sequence[int], vocab: Vocab, acts: Vocab,
               context_window: int) -> DialogSplit:
    """Flatten ``dialogs[i]`` for i in ``ids`` and enumerate their pairs (module docstring)."""
    utts, words, speakers, act_ids, dialog, pairs = [], [], [], [], [], []
    for d in ids:
        start = len(utts)
        for i, u in enumerate(dialogs[d].utts):
            utts.append(vocab.encode(u.words))
            words.append(u.words)
            speakers.append(u.speaker)
            act_ids.append(acts.stoi.get(u.act, acts.unk))
            dialog.append(d)
            if i >= 1:
                pairs.append((start + max(0, i - context_window), start + i))
    return DialogSplit(utts, words, speakers, np.asarray(act_ids, dtype=np.int64), np.asarray(dialog, dtype=np.int64),
                       np.asarray(pairs, dtype=np.int64).reshape(-1, 2))


def load_swda(data_dir: str | Path, *, context_window: int = 10, max_utt_len: int = 40, min_freq: int = 2,
              val_frac: float = 0.1, test_frac: float = 0.1, seed: int = 0, max_dialogs: int = 0) -> DialogData:
    """Switchboard from ``data_dir/swda`` (or ``data_dir`` itself when it holds the ``.jsonl`` files); splits,
    vocabularies and pairs as in the module docstring. ``max_dialogs`` > 0 keeps only the first that many dialogs
    of each file (small test runs). Bad input: a one-line ``FileNotFoundError``/``ValueError``."""
    if context_window < 1 or max_utt_len < 1 or min_freq < 1 or max_dialogs < 0:
        raise ValueError(f"swda: need context_window, max_utt_len, min_freq >= 1 and max_dialogs >= 0, got "
                         f"{context_window}, {max_utt_len}, {min_freq}, {max_dialogs}")
    root = Path(data_dir)
    root = root / "swda" if (root / "swda").is_dir() or not (root / "valid.jsonl").is_file() else root
    if (root / "train.jsonl").is_file():
        parts = [read_dialogs(root / f"{name}.jsonl", max_utt_len)[:max_dialogs or None]
                 for name in ("train", "valid", "test")]
        dialogs = [d for part in parts for d in part]
        bounds = np.cumsum([0, *map(len, parts)])
        split = [np.arange(bounds[i], bounds[i + 1]) for i in range(3)]
        source = f"{root}/{{train,valid,test}}.jsonl"
    else:
        dialogs = read_dialogs(root / "valid.jsonl", max_utt_len)[:max_dialogs or None]
        split = list(split_indices(len(dialogs), val_frac, test_frac, seed))
        if min(map(len, split)) == 0:
            raise ValueError(f"swda: {len(dialogs)} dialogs leave an empty split at val_frac={val_frac}, "
                             f"test_frac={test_frac}")
        source = f"{root}/valid.jsonl split by dialog, seed {seed}, val/test fractions {val_frac}/{test_frac}"
    train_utts = [u for i in split[0] for u in dialogs[i].utts]
    vocab = Vocab.build((u.words for u in train_utts), min_freq, specials=SPECIALS)
    acts = Vocab.build(([u.act] for u in train_utts), 1, specials=ACT_SPECIALS)
    tr, va, te = (make_split(dialogs, ids, vocab, acts, context_window) for ids in split)
    return DialogData(vocab, acts, tr, va, te, context_window, max_utt_len, source)


@dataclass
class DialogBatch:
    """Padded tensors of B pairs (W = longest context, L = longest utterance in the batch):

    ``ctx`` [B, W, L] word ids of the context utterances (oldest first; pad 0 after the real ones),
    ``ctx_word_lens`` [B, W] words per context utterance (1 for padding slots, which are never read),
    ``ctx_lens`` [B] context utterances per pair, ``same`` [B, W] float speaker feature, ``resp`` [B, R] response
    words, ``resp_lens`` [B], ``dec_in`` [B, R+1] = ``<s>`` + words, ``target`` [B, R+1] = words + ``</s>``,
    ``mask`` [B, R+1] float, 1 on predicted tokens, ``act`` [B] the response's act id."""

    ctx: torch.Tensor
    ctx_word_lens: torch.Tensor
    ctx_lens: torch.Tensor
    same: torch.Tensor
    resp: torch.Tensor
    resp_lens: torch.Tensor
    dec_in: torch.Tensor
    target: torch.Tensor
    mask: torch.Tensor
    act: torch.Tensor

    def __len__(self) -> int:
        return self.ctx.shape[0]

    @property
    def n_tokens(self) -> int:
        return int(self.mask.sum().item())


def make_batch(split: DialogSplit, idx: Sequence[int], vocab: Vocab, device: torch.device | str = "cpu") -> DialogBatch:
    """The :class:`DialogBatch` of pairs ``idx`` of ``split``."""
    contexts = [split.context(int(i)) for i in idx]
    responses = [split.utts[int(split.pairs[i][1])] for i in idx]
    b, w = len(idx), max(len(c) for c, _ in contexts)
    length = max(max(len(u) for c, _ in contexts for u in c), 1)
    ctx = torch.full((b, w, length), vocab.pad, dtype=torch.long)
    word_lens = torch.ones((b, w), dtype=torch.long)
    same = torch.zeros((b, w))
    for i, (utts, feats) in enumerate(contexts):
        for j, u in enumerate(utts):
            ctx[i, j, :len(u)] = torch.as_tensor(u)
            word_lens[i, j] = len(u)
        same[i, :len(feats)] = torch.as_tensor(feats, dtype=torch.float)
    resp, resp_lens, dec_in, target = teacher_forcing(responses, vocab)
    ctx_lens = torch.as_tensor([len(c) for c, _ in contexts], dtype=torch.long)
    act = torch.as_tensor(split.acts[split.pairs[np.asarray(idx, dtype=np.int64), 1]], dtype=torch.long)
    tensors = (ctx, word_lens, ctx_lens, same, resp, resp_lens, dec_in, target, (target != vocab.pad).float(), act)
    return DialogBatch(*(t.to(device) for t in tensors))


def batch_indices(n: int, batch_size: int, *, shuffle: bool, seed: int = 0) -> list[np.ndarray]:
    """Index batches over ``range(n)``: a permutation seeded with ``seed`` when ``shuffle``, else in order."""
    order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]


def batches(split: DialogSplit, vocab: Vocab, batch_size: int, *, shuffle: bool, seed: int = 0,
            device: torch.device | str = "cpu") -> list[DialogBatch]:
    """Every pair of ``split`` once, in :func:`batch_indices` order."""
    return [make_batch(split, b, vocab, device) for b in batch_indices(len(split), batch_size, shuffle=shuffle,
                                                                       seed=seed)]
