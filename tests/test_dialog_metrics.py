"""Dialog metrics on hand-computed cases: BLEU-n, precision/recall over samples and F1, intra- and inter-distinct-n,
act accuracy, BOW embedding average / extrema / greedy as precision and recall, response length, the PPMI-SVD word
vectors."""
import math

import numpy as np
import pytest

from trainables.text.dialog_metrics import (
    act_accuracy,
    bleu_precision_recall,
    distinct,
    embedding_scores,
    f1,
    generation_metrics,
    intra_distinct,
    precision_recall,
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


def test_precision_recall_and_f1_on_a_hand_matrix():
    scores = [[0.2, 0.9], [0.5, 0.1], [0.4, 0.3]]  # 3 samples x 2 references
    p, r = precision_recall(scores)
    assert p == pytest.approx((0.9 + 0.5 + 0.4) / 3) and r == pytest.approx((0.5 + 0.9) / 2)
    assert precision_recall([[0.3]]) == pytest.approx((0.3, 0.3))
    assert f1(0.6, 0.3) == pytest.approx(0.4) and f1(0.0, 0.0) == 0.0
    with pytest.raises(ValueError, match="N, M >= 1"):
        precision_recall(np.zeros((0, 1)))


def test_intra_and_inter_distinct_and_act_accuracy():
    sents = [["a", "b", "a"], ["a", "b"], ["c"]]
    # inter (pooled): unigrams a b a a b c -> 3 distinct of 6; bigrams ab ba ab -> 2 of 3
    assert distinct(sents, 1) == pytest.approx(3 / 6) and distinct(sents, 2) == pytest.approx(2 / 3)
    # intra: per sentence 2/3, 2/2, 1/1 unigrams; 2/2, 1/1 bigrams and "c" has none (0)
    assert intra_distinct(sents, 1) == pytest.approx((2 / 3 + 1 + 1) / 3)
    assert intra_distinct(sents, 2) == pytest.approx((1 + 1 + 0) / 3)
    assert distinct([["a"]], 2) == 0.0
    with pytest.raises(ValueError, match="at least one sentence"):
        intra_distinct([], 1)
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


def test_generation_metrics_on_a_hand_computed_case():
    table, stoi = np.eye(3, dtype=np.float32), {"a": 0, "b": 1, "c": 2}
    samples = [[["a", "b"], ["c"]], [["a"], ["a"]]]
    refs = [[["a", "b"]], [["b"]]]
    out = generation_metrics(samples, refs, table, stoi, max_n=2)
    p1 = [(1.0 + 0.1 * math.exp(-1)) / 2, 0.1]  # context 1: exact + (ε with BP e^-1); context 2: ε, ε
    r1 = [1.0, 0.1]  # the best sample of each context
    assert out["bleu1_p"] == pytest.approx(np.mean(p1)) and out["bleu1_r"] == pytest.approx(np.mean(r1))
    assert out["bleu1_f1"] == pytest.approx(2 * np.mean(p1) * np.mean(r1) / (np.mean(p1) + np.mean(r1)))
    # one-hot vectors: "a b" vs "a b" scores 1 on all three, "c" vs "a b" and "a" vs "b" score 0;
    # context 1: precision (1 + 0)/2, recall max(1, 0); context 2: 0, 0
    for key in ("bow_avg", "bow_extrema", "bow_greedy"):
        assert out[f"{key}_p"] == pytest.approx(0.25) and out[f"{key}_r"] == pytest.approx(0.5), key
    # responses "a b", "c", "a", "a": unigrams a b c a a (3 distinct of 5), one bigram
    assert out["inter_dist1"] == pytest.approx(3 / 5) and out["inter_dist2"] == pytest.approx(1.0)
    assert out["intra_dist1"] == pytest.approx(1.0) and out["intra_dist2"] == pytest.approx(1 / 4)
    assert out["response_len"] == pytest.approx((2 + 1 + 1 + 1) / 4)
    assert set(out) == {*(f"bleu{n}_{s}" for n in (1, 2) for s in ("p", "r", "f1")),
                        *(f"bow_{k}_{s}" for k in ("avg", "extrema", "greedy") for s in "pr"),
                        "intra_dist1", "intra_dist2", "inter_dist1", "inter_dist2", "response_len"}
    with pytest.raises(ValueError, match="as many sample lists"):
        generation_metrics(samples, refs[:1], table, stoi)


def test_embedding_precision_and_recall_with_two_references():
    table, stoi = np.eye(3, dtype=np.float32), {"a": 0, "b": 1, "c": 2}
    # both samples "a" match reference "a" (1) and not "c" (0): precision mean_i max_j = 1, recall mean_j max_i = ½
    out = generation_metrics([[["a"], ["a"]]], [[["a"], ["c"]]], table, stoi, max_n=1)
    assert out["bow_avg_p"] == pytest.approx(1.0) and out["bow_avg_r"] == pytest.approx(0.5)
    assert out["bow_greedy_p"] == pytest.approx(1.0) and out["bow_greedy_r"] == pytest.approx(0.5)
