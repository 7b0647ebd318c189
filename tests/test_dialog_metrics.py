"""Dialog metrics on hand-computed cases: BLEU-n, precision/recall over samples, distinct-n, act accuracy, BOW
embedding average / extrema / greedy, the PPMI-SVD word vectors."""
import math

import numpy as np
import pytest

from trainables.text.dialog_metrics import (
    act_accuracy,
    bleu_precision_recall,
    distinct,
    embedding_scores,
    generation_metrics,
    sentence_bleu,
    word_vectors,
)

REF = "the cat sat on the mat".split()


def test_sentence_bleu_on_hand_computed_cases():
    hyp = "the cat sat".split()  # p1 = p2 = p3 = 1, p4 = ε/1 (no 4-gram), BP = exp(1 - 6/3)
    assert sentence_bleu(hyp, REF, 1) == pytest.approx(math.exp(-1))
    assert sentence_bleu(hyp, REF, 3) == pytest.approx(math.exp(-1))
    assert sentence_bleu(hyp, REF, 4) == pytest.approx(math.exp(-1) * 0.1 ** 0.25)
    assert sentence_bleu(REF, REF, 4) == pytest.approx(1.0)
    assert sentence_bleu("the the the".split(), "the cat".split(), 1) == pytest.approx(1 / 3)  # clipped, no BP
    # p1 = 3/3, p2 = ε/2 (neither bigram matches), BP = 1: sqrt(1 * 0.05)
    assert sentence_bleu("cat the sat".split(), REF[:3], 2) == pytest.approx(math.sqrt(0.05))
    assert sentence_bleu([], REF, 4) == 0.0
    with pytest.raises(ValueError, match="n must be"):
        sentence_bleu(REF, REF, 0)


def test_precision_is_the_mean_and_recall_the_best_sample():
    good, half = REF, "the cat sat".split()
    p, r = bleu_precision_recall([good, half], [REF], 1)
    assert p == pytest.approx((1 + math.exp(-1)) / 2) and r == pytest.approx(1.0)
    # two references: precision = mean_i max_j, recall = mean_j max_i
    other = "a dog".split()
    scores = [[sentence_bleu(h, ref, 1) for ref in (REF, other)] for h in (good, half)]
    p, r = bleu_precision_recall([good, half], [REF, other], 1)
    assert p == pytest.approx(np.mean(np.max(scores, 1))) and r == pytest.approx(np.mean(np.max(scores, 0)))
    with pytest.raises(ValueError, match="at least one hypothesis"):
        bleu_precision_recall([], [REF])


def test_distinct_and_act_accuracy():
    sents = [["a", "b", "a"], ["a", "b"]]
    assert distinct(sents, 1) == pytest.approx(2 / 5) and distinct(sents, 2) == pytest.approx(2 / 3)
    assert distinct([["a"]], 2) == 0.0
    assert act_accuracy([1, 2, 3], [1, 0, 3]) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="equal, non-empty"):
        act_accuracy([1], [1, 2])


def test_embedding_average_extrema_greedy_on_hand_vectors():
    v = {"a": np.array([1.0, 0.0]), "b": np.array([0.0, 1.0]), "c": np.array([1.0, 1.0]),
         "d": np.array([1.0, -3.0]), "e": np.array([2.0, 1.0])}
    assert embedding_scores(["a"], ["b"], v) == pytest.approx({"bow_avg": 0, "bow_extrema": 0, "bow_greedy": 0})
    s = embedding_scores(["a", "b"], ["c"], v)
    assert s["bow_avg"] == pytest.approx(1.0) and s["bow_extrema"] == pytest.approx(1.0)
    assert s["bow_greedy"] == pytest.approx(1 / math.sqrt(2))  # ½(mean(.707, .707) + max(.707, .707))
    # extrema of d, e = (2, -3): per dimension the value of largest magnitude; against c = (1, 1)
    assert embedding_scores(["d", "e"], ["c"], v)["bow_extrema"] == pytest.approx(-1 / (math.sqrt(13) * math.sqrt(2)))
    assert embedding_scores(["zz", "a"], ["a"], v)["bow_avg"] == pytest.approx(1.0), "words without vectors skipped"
    assert embedding_scores(["zz"], ["a"], v) == {"bow_avg": 0.0, "bow_extrema": 0.0, "bow_greedy": 0.0}


def test_word_vectors_put_words_of_shared_contexts_together_and_are_deterministic():
    # ids: 0 a, 1 b, 2 x, 3 y, 4 c, 5 d, 6 z; x and y share contexts (a _ b), z has its own (c _ d)
    sents = [[0, 2, 1], [0, 3, 1], [4, 6, 5]] * 5
    vec = word_vectors(sents, 7, dim=4)
    assert vec.shape == (7, 4)
    cos = lambda i, j: vec[i] @ vec[j] / np.linalg.norm(vec[i]) / np.linalg.norm(vec[j])  # noqa: E731
    assert cos(2, 3) > 0.9 and abs(cos(2, 6)) < 0.1
    assert np.array_equal(vec, word_vectors(sents, 7, dim=4))
    with pytest.raises(ValueError, match="no co-occurring"):
        word_vectors([[1]], 3)


def test_generation_metrics_average_over_contexts():
    table, stoi = np.eye(3, dtype=np.float32), {"a": 0, "b": 1, "c": 2}
    samples = [[["a", "b"], ["c"]], [["a"], ["a"]]]
    refs = [[["a", "b"]], [["b"]]]
    out = generation_metrics(samples, refs, table, stoi, max_n=2)
    p1 = [(1.0 + 0.1 * math.exp(-1)) / 2, 0.1]  # context 1: exact + (ε with BP e^-1); context 2: ε, ε
    assert out["bleu1_p"] == pytest.approx(np.mean(p1)) and out["bleu1_r"] == pytest.approx((1.0 + 0.1) / 2)
    assert out["bow_avg"] == pytest.approx(np.mean([(1 + 0) / 2, 0]))
    assert out["distinct_1"] == pytest.approx(3 / 5) and out["distinct_2"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="as many sample lists"):
        generation_metrics(samples, refs[:1], table, stoi)
