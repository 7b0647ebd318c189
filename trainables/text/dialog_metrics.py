"""Response-generation metrics of the dialog CVAE, as the thesis (after kgCVAE, Zhao et al. 2017) reports them.

Sentences are token lists (strings). Definitions, each tested on a hand-computed case:

- **BLEU-n** (:func:`sentence_bleu`): ``BP · exp(Σ_{k=1..n} (1/n) log p_k)``, ``p_k`` the clipped k-gram
  precision of the hypothesis against the reference (``Σ_g min(count_h(g), count_r(g)) / max(1, k-grams of h)``);
  a zero clipped count is smoothed to ε = 0.1 (Chen & Cherry 2014, method 1); ``BP = exp(1 − r/c)`` when the
  hypothesis length c is below the reference length r, else 1; an empty hypothesis scores 0. kgCVAE used NLTK's
  ``method7`` smoothing, so absolute values are not on the thesis's scale; comparisons between configurations
  are.
- **Precision and recall over samples** (:func:`precision_recall`; Zhao et al. 2017's protocol, which the thesis
  follows): for N sampled responses ``h_1..h_N`` of one context, M references ``r_1..r_M`` and a similarity d,
  ``precision = (1/N) Σ_i max_j d(h_i, r_j)`` and ``recall = (1/M) Σ_j max_i d(h_i, r_j)``. With one reference
  (Switchboard here): precision = the mean over the N samples, recall = the best sample. Both are averaged over
  the test contexts. d is BLEU-n (``bleu{n}_p``, ``bleu{n}_r``) or one of the three embedding similarities
  below (``bow_{avg,extrema,greedy}_{p,r}``; kgCVAE and DialogWAE report the recall side, the max over samples).
- **BLEU F1** (``bleu{n}_f1``; kgCVAE's and DialogWAE's evaluation code): ``2·P·R / (P + R)`` of the
  context-averaged precision P and recall R (0 when both are 0).
- **Bag-of-words embedding similarity** (:func:`embedding_scores`; Liu et al. 2016) of a hypothesis and a
  reference, from word vectors (:func:`word_vectors`): *average* = cos(mean vector of h, mean vector of r);
  *extrema* = cos of the two extrema vectors (per dimension the value of largest magnitude over the words;
  Forgues et al. 2014); *greedy* = ½ (G(h, r) + G(r, h)) with ``G(a, b) = mean_{w∈a} max_{v∈b} cos(w, v)``.
  Words without a vector are skipped; a sentence left without any scores 0.
- **Word vectors** (:func:`word_vectors`), trained here since nothing can be downloaded: the truncated SVD of
  the positive pointwise mutual information matrix of word co-occurrences within ``window`` words in the
  training utterances (context distribution smoothed with exponent 0.75), vectors ``U·√S`` (Levy, Goldberg &
  Dagan 2015: the count-based equivalent of skip-gram with negative sampling). Deterministic (a seeded start
  vector), computed once per corpus, the same for every configuration.
- **Distinct-n** (Li et al. 2016; intra and inter as DialogWAE, Gu et al. 2019, defines them): *intra*
  (:func:`intra_distinct`, ``intra_dist{1,2}``) = distinct n-grams / n-grams within one generated response,
  averaged over every generated response (one without an n-gram counts 0); *inter* (:func:`distinct`,
  ``inter_dist{1,2}``) = distinct n-grams / n-grams over all generated responses of the test split pooled, so it
  also drops when different contexts get the same response. (DialogWAE's evaluation code pools each context's
  samples and averages over the contexts instead, which counts only the repeats within a context.)
- **Response length** (``response_len``): the mean number of words of a generated response (``</s>`` not
  counted), over every sample of every test context.
- **dialog-act accuracy** (:func:`act_accuracy`): the fraction of predicted acts equal to the response's act.

Likelihood metrics (nats per response, ``rec`` = −log p(x|z, c) with z ~ q(z|x, c), ``kl`` = the KL term,
``rec_ppl = exp(Σ rec / Σ tokens)``, ``ppl = exp(Σ (rec + kl) / Σ tokens)``, tokens = words + one ``</s>``) are
computed by ``trainables.text.dialog_model.evaluate_dialog``.
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np

SMOOTH_EPS = 0.1


def ngrams(tokens: Sequence[str], n: int) -> Counter:
    """Counts of the n-grams (tuples) of ``tokens``."""
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def sentence_bleu(hyp: Sequence[str], ref: Sequence[str], n: int = 4, eps: float = SMOOTH_EPS) -> float:
    """BLEU-``n`` of ``hyp`` against one reference ``ref`` in [0, 1] (module docstring)."""
    if n < 1:
        raise ValueError(f"BLEU: n must be >= 1, got {n}")
    c, r = len(hyp), len(ref)
    if c == 0:
        return 0.0
    log_p = 0.0
    for k in range(1, n + 1):
        h, g = ngrams(hyp, k), ngrams(ref, k)
        hits = sum(min(cnt, g[gram]) for gram, cnt in h.items())
        log_p += math.log((hits or eps) / max(1, sum(h.values()))) / n
    bp = 1.0 if c >= r else math.exp(1.0 - r / c)
    return bp * math.exp(log_p)


def precision_recall(scores: np.ndarray) -> tuple[float, float]:
    """``(precision, recall)`` of a similarity matrix ``scores`` [N samples, M references] of one context:
    ``(mean_i max_j scores[i, j], mean_j max_i scores[i, j])`` (module docstring)."""
    scores = np.asarray(scores, dtype=float)
    if scores.ndim != 2 or not scores.size:
        raise ValueError(f"precision/recall: need an [N samples, M references] matrix with N, M >= 1, got shape "
                         f"{scores.shape}")
    return float(scores.max(1).mean()), float(scores.max(0).mean())


def bleu_precision_recall(hyps: Sequence[Sequence[str]], refs: Sequence[Sequence[str]],
                          n: int = 4) -> tuple[float, float]:
    """``(precision, recall)`` of BLEU-``n`` for N hypotheses and M references of one context (module docstring)."""
    if not hyps or not refs:
        raise ValueError(f"BLEU precision/recall: need at least one hypothesis and one reference, "
                         f"got {len(hyps)} and {len(refs)}")
    return precision_recall([[sentence_bleu(h, r, n) for r in refs] for h in hyps])


def f1(precision: float, recall: float) -> float:
    """The harmonic mean ``2·P·R / (P + R)`` of a precision and a recall in [0, 1]; 0 when both are 0."""
    total = precision + recall
    return 2.0 * precision * recall / total if total > 0 else 0.0


def distinct(sentences: Sequence[Sequence[str]], n: int) -> float:
    """Distinct n-grams / all n-grams over ``sentences`` pooled (0 when there is no n-gram): inter-distinct."""
    counts = Counter()
    for s in sentences:
        counts.update(ngrams(s, n))
    total = sum(counts.values())
    return len(counts) / total if total else 0.0


def intra_distinct(sentences: Sequence[Sequence[str]], n: int) -> float:
    """The mean over ``sentences`` (at least one) of each one's distinct n-grams / its n-grams; a sentence
    without an n-gram counts 0."""
    if not sentences:
        raise ValueError("intra-distinct: need at least one sentence")
    return float(np.mean([distinct([s], n) for s in sentences]))


def act_accuracy(predicted: Sequence[int], true: Sequence[int]) -> float:
    """Fraction of ``predicted`` act ids equal to ``true`` (same length, at least one)."""
    predicted, true = np.asarray(predicted), np.asarray(true)
    if predicted.shape != true.shape or not predicted.size:
        raise ValueError(f"act accuracy: need two equal, non-empty shapes, got {predicted.shape} and {true.shape}")
    return float((predicted == true).mean())


def word_vectors(sentences: Sequence[Sequence[int]], vocab_size: int, dim: int = 100, window: int = 2,
                 seed: int = 0) -> np.ndarray:
    """Word vectors [vocab_size, dim'] (dim' = min(dim, vocab_size − 1)) from id lists: PPMI + truncated SVD
    (module docstring). Rows of ids that never co-occur are 0 (no vector)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.linalg import svds

    rows, cols = [], []
    for s in sentences:
        for i, w in enumerate(s):
            for j in range(max(0, i - window), min(len(s), i + window + 1)):
                if j != i:
                    rows.append(w)
                    cols.append(s[j])
    if not rows:
        raise ValueError("word vectors: the sentences hold no co-occurring words")
    counts = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(vocab_size, vocab_size)).tocsr()
    counts.sum_duplicates()
    total = counts.sum()
    row_p = np.asarray(counts.sum(1)).ravel() / total
    ctx = np.asarray(counts.sum(0)).ravel() ** 0.75
    ctx_p = ctx / ctx.sum()
    c = counts.tocoo()
    pmi = np.log(c.data / total) - np.log(row_p[c.row]) - np.log(ctx_p[c.col])
    keep = pmi > 0
    ppmi = coo_matrix((pmi[keep], (c.row[keep], c.col[keep])), shape=counts.shape).tocsr()
    k = max(1, min(dim, vocab_size - 1))
    v0 = np.random.default_rng(seed).standard_normal(vocab_size)
    u, s, _ = svds(ppmi, k=k, v0=v0)
    return (u * np.sqrt(s)).astype(np.float32)


def _unit(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(_unit(a) @ _unit(b))


def _extrema(m: np.ndarray) -> np.ndarray:
    hi, lo = m.max(0), m.min(0)
    return np.where(np.abs(lo) > np.abs(hi), lo, hi)


def embedding_scores(hyp: Sequence[str], ref: Sequence[str], vectors: Mapping[str, np.ndarray] | None = None,
                     *, table: np.ndarray | None = None, stoi: Mapping[str, int] | None = None) -> dict[str, float]:
    """``{"bow_avg", "bow_extrema", "bow_greedy"}`` of ``hyp`` against ``ref`` (module docstring). Vectors come
    from ``vectors`` (word -> vector) or from ``table`` rows looked up by ``stoi``; zero rows count as missing."""
    def matrix(tokens: Sequence[str]) -> np.ndarray:
        if vectors is not None:
            vs = [np.asarray(vectors[w], dtype=float) for w in tokens if w in vectors]
        else:
            vs = [table[stoi[w]].astype(float) for w in tokens if w in stoi]
        vs = [v for v in vs if np.any(v)]
        return np.stack(vs) if vs else np.zeros((0, 1))

    h, r = matrix(hyp), matrix(ref)
    if not len(h) or not len(r):
        return {"bow_avg": 0.0, "bow_extrema": 0.0, "bow_greedy": 0.0}
    sims = _unit(h) @ _unit(r).T  # [|h|, |r|]
    return {"bow_avg": _cos(h.mean(0), r.mean(0)), "bow_extrema": _cos(_extrema(h), _extrema(r)),
            "bow_greedy": float(0.5 * (sims.max(1).mean() + sims.max(0).mean()))}


#: The per-pair similarities of :func:`embedding_scores`, each reported as ``<name>_p`` and ``<name>_r``.
EMBEDDING_SCORES = ("bow_avg", "bow_extrema", "bow_greedy")


def generation_metrics(samples: Sequence[Sequence[Sequence[str]]], refs: Sequence[Sequence[Sequence[str]]],
                       table: np.ndarray, stoi: Mapping[str, int], max_n: int = 4) -> dict[str, float]:
    """The generation metrics of the module docstring over C test contexts (BLEU and distinct in [0, 1], the BOW
    cosines in [−1, 1], ``response_len`` in words): means over contexts of BLEU-1..``max_n`` precision and recall
    (``bleu{n}_p``, ``bleu{n}_r``) with their F1 (``bleu{n}_f1``) and of the embedding scores' precision and recall
    (``bow_{avg,extrema,greedy}_{p,r}``, word vectors ``table`` [V, d] looked up by ``stoi``); ``intra_dist{1,2}``,
    ``inter_dist{1,2}`` and ``response_len`` over every generated response. ``samples[i]``: the N >= 1 generated
    token lists of context i; ``refs[i]``: its M >= 1 reference token lists."""
    if len(samples) != len(refs) or not samples:
        raise ValueError(f"generation metrics: need as many sample lists as reference lists (>= 1), got "
                         f"{len(samples)} and {len(refs)}")
    sums: Counter = Counter()
    for hyps, rs in zip(samples, refs):
        pairs = [[embedding_scores(h, r, table=table, stoi=stoi) for r in rs] for h in hyps]
        sides = {**{f"bleu{n}": bleu_precision_recall(hyps, rs, n) for n in range(1, max_n + 1)},
                 **{key: precision_recall([[pair[key] for pair in row] for row in pairs]) for key in EMBEDDING_SCORES}}
        for name, (p, r) in sides.items():
            sums[f"{name}_p"] += p
            sums[f"{name}_r"] += r
    out = {k: float(v) / len(samples) for k, v in sums.items()}
    for n in range(1, max_n + 1):
        out[f"bleu{n}_f1"] = f1(out[f"bleu{n}_p"], out[f"bleu{n}_r"])
    flat = [h for hyps in samples for h in hyps]
    out.update(intra_dist1=intra_distinct(flat, 1), intra_dist2=intra_distinct(flat, 2),
               inter_dist1=distinct(flat, 1), inter_dist2=distinct(flat, 2),
               response_len=float(np.mean([len(h) for h in flat])))
    return out
