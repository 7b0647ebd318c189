"""Text VAE: data and tokeniser, model shapes and wiring, metrics on cases with known answers, a toy run."""
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from trainables.text.data import (
    TextSplit,
    Vocab,
    length_bucketed_batches,
    load_ptb,
    load_yelp,
    make_batch,
    split_indices,
    toy_corpus,
)
from trainables.text.posteriors import diag_normal_log_prob
from trainables.text.vae_metrics import (
    active_units,
    downstream_accuracy,
    evaluate_vae,
    finetune_accuracy,
    iw_nll,
    knn_accuracy,
    labelled_subset,
    mutual_information,
    perplexity,
)
from trainables.text.vae_model import TextVAE, VAEModelConfig, VAETrainConfig, train_vae

DATA_DIR = Path(os.environ.get("DCSOD_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))
TINY = VAEModelConfig(emb_dim=8, hidden_dim=16, latent_dim=3)


# --- data ---------------------------------------------------------------------------------------
def test_vocab_min_freq_specials_and_unk():
    vocab = Vocab.build([["a", "b", "a"], ["c", "a", "b"]], min_freq=2)
    assert vocab.itos == ["<pad>", "<bos>", "<eos>", "<unk>", "a", "b"]
    assert (vocab.pad, vocab.bos, vocab.eos, vocab.unk) == (0, 1, 2, 3)
    assert vocab.encode(["a", "c", "zzz"]) == [4, 3, 3]
    assert vocab.decode([1, 4, 5, 2, 4]) == ["a", "b"]  # stops at <eos>, skips <bos>


def test_split_indices_are_disjoint_complete_and_seeded():
    tr, va, te = split_indices(101, 0.1, 0.2, seed=3)
    assert len(va) == 10 and len(te) == 20 and len(tr) == 71
    assert sorted(np.concatenate([tr, va, te]).tolist()) == list(range(101))
    again = split_indices(101, 0.1, 0.2, seed=3)
    assert all((a == b).all() for a, b in zip((tr, va, te), again))
    assert not (split_indices(101, 0.1, 0.2, seed=4)[2] == te).all()
    with pytest.raises(ValueError, match="val_frac"):
        split_indices(10, 0.6, 0.5, seed=0)


def test_length_bucketed_batches_cover_every_sentence_once_with_similar_lengths():
    lengths = np.random.default_rng(0).integers(1, 30, size=203)
    got = length_bucketed_batches(lengths, 16, shuffle=True, seed=1)
    assert sorted(np.concatenate(got).tolist()) == list(range(203))
    assert max(lengths[b].max() - lengths[b].min() for b in got) <= 3  # 203 sentences over 29 lengths
    assert [b.tolist() for b in got] == [b.tolist() for b in length_bucketed_batches(lengths, 16, shuffle=True, seed=1)]
    assert [b.tolist() for b in got] != [b.tolist() for b in length_bucketed_batches(lengths, 16, shuffle=True, seed=2)]


def test_make_batch_teacher_forcing_layout():
    vocab = Vocab(["x", "y"])
    b = make_batch([[4, 5, 4], [5]], vocab)
    assert b.src.tolist() == [[4, 5, 4], [5, 0, 0]] and b.lengths.tolist() == [3, 1]
    assert b.dec_in.tolist() == [[1, 4, 5, 4], [1, 5, 0, 0]]
    assert b.target.tolist() == [[4, 5, 4, 2], [5, 2, 0, 0]]
    assert b.n_tokens == 3 + 1 + 1 + 1  # words + one <eos> each


def test_toy_corpus_is_ten_distinct_one_hot_sequences():
    data = toy_corpus(copies=3)
    seqs = [data.vocab.decode(s) for s in data.test.sentences]
    assert len(seqs) == 10 and all(len(s) == 10 for s in seqs)
    assert [s.index("1") for s in seqs] == list(range(10)) and all(s.count("1") == 1 for s in seqs)
    assert data.test.labels.tolist() == list(range(10))
    assert len(data.train) == 30 and data.train.n_words == 30 * 11


@pytest.fixture
def yelp_dir(tmp_path):
    """A Yelp-format directory: 30 negative, 20 positive short sentences, one blank and one over-long line."""
    root = tmp_path / "yelp-sentiment"
    root.mkdir()
    neg = [f"bad food number {i} ." for i in range(30)] + ["", "this line is far too long for the max length cap"]
    pos = [f"good food number {i} !" for i in range(20)]
    (root / "dev.0.txt").write_text("\n".join(neg) + "\n")
    (root / "dev.1.txt").write_text("\n".join(pos) + "\n")
    return tmp_path


def test_line_corpus_loader_on_a_small_directory(yelp_dir):
    tmp_path = yelp_dir
    data = load_yelp(tmp_path, max_len=6, min_freq=2, val_frac=0.2, test_frac=0.2, seed=0)
    assert len(data.train) + len(data.val) + len(data.test) == 50  # blank and over-long lines dropped
    labels = np.concatenate([data.train.labels, data.val.labels, data.test.labels])
    assert sorted(labels.tolist()) == [0] * 30 + [1] * 20
    words = {data.vocab.itos[i] for s in data.train.sentences for i in s}
    assert {"food", "number", "bad", "good"} <= words and "17" not in data.vocab.stoi  # numbers occur once
    again = load_yelp(tmp_path, max_len=6, min_freq=2, val_frac=0.2, test_frac=0.2, seed=0)
    assert again.test.sentences == data.test.sentences
    with pytest.raises(FileNotFoundError, match="ptb"):
        load_ptb(tmp_path)


def _write_ptb(root: Path, files: dict[str, list[str]]) -> Path:
    (root / "ptb").mkdir()
    for name, lines in files.items():
        (root / "ptb" / name).write_text("\n".join(lines) + "\n")
    return root


def test_ptb_reads_the_official_split_when_train_txt_is_there(tmp_path):
    train = [f"the cat number {i} sat" for i in range(30)] + ["a sentence far too long to keep here at all"]
    valid = [f"the dog number {i} ran" for i in range(7)]
    test = [f"a bird number {i} flew" for i in range(5)]
    data = load_ptb(_write_ptb(tmp_path, {"train.txt": train, "valid.txt": valid, "test.txt": test}),
                    max_len=6, min_freq=2, val_frac=0.5, test_frac=0.3, seed=3)
    decode = data.vocab.decode
    assert len(data.train) == 30 and len(data.val) == 7 and len(data.test) == 5  # the files, not a permutation
    assert all(decode(s)[:2] == ["the", "cat"] for s in data.train.sentences)
    assert [decode(s)[1] for s in data.val.sentences] == ["<unk>"] * 7  # "dog" never occurs in train.txt
    assert [decode(s)[0] for s in data.test.sentences] == ["<unk>"] * 5
    assert set(data.vocab.itos[4:]) == {"the", "cat", "number", "sat"}  # the vocabulary is train.txt's
    assert (data.train.labels == -1).all()


def test_ptb_without_train_txt_pools_valid_and_test(tmp_path):
    valid = [f"the dog number {i} ran" for i in range(30)]
    test = [f"a bird number {i} flew" for i in range(20)]
    data = load_ptb(_write_ptb(tmp_path, {"valid.txt": valid, "test.txt": test}), max_len=6, min_freq=2,
                    val_frac=0.2, test_frac=0.2, seed=0)
    assert (len(data.train), len(data.val), len(data.test)) == (30, 10, 10)
    firsts = {data.vocab.decode(s)[0] for split in (data.train, data.val, data.test) for s in split.sentences}
    assert firsts == {"the", "a"}  # both files in every split, mixed by the seeded permutation


@pytest.mark.skipif(not (DATA_DIR / "ptb" / "valid.txt").exists(), reason=f"PTB not under {DATA_DIR}")
def test_ptb_development_data():
    data = load_ptb(DATA_DIR, max_len=40, min_freq=2)
    assert 6000 < len(data.train) + len(data.val) + len(data.test) <= 7131
    assert max(len(s) for s in data.train.sentences) <= 40 and "<unk>" in data.vocab.stoi
    assert 2000 < len(data.vocab) < 10001


@pytest.mark.skipif(not (DATA_DIR / "yelp-sentiment" / "dev.0.txt").exists(), reason=f"Yelp not under {DATA_DIR}")
def test_yelp_development_data_subset():
    data = load_yelp(DATA_DIR, limit=3000, seed=1)
    assert len(data.train) + len(data.val) + len(data.test) == 3000
    assert 0.45 < data.train.labels.mean() < 0.75  # ~60% positive in dev
    assert max(len(s) for s in data.test.sentences) <= 15


# --- model --------------------------------------------------------------------------------------
@pytest.fixture
def toy_batch():
    data = toy_corpus()
    return data, make_batch(data.test.sentences[:4], data.vocab)


@pytest.mark.parametrize("posterior", ["gaussian", "semi-implicit", "sa"])
def test_model_shapes(toy_batch, posterior):
    data, batch = toy_batch
    torch.manual_seed(0)
    options = {"semi-implicit": {"noise_dim": 5}, "gaussian": {}, "sa": {"steps": 2}}
    model = TextVAE(len(data.vocab), VAEModelConfig(8, 16, 3, posterior=posterior, posterior_options=options))
    if posterior == "semi-implicit":
        assert model.posterior.noise_dim == 5
    mu, logvar = model.components(batch, 5)
    assert mu.shape[0] == 4 and mu.shape[2] == 3 and logvar.shape == mu.shape
    z = torch.randn(2, 4, 3)
    assert model.logits(z, batch.dec_in).shape == (2, 4, 11, len(data.vocab))
    assert model.reconstruction(z, batch).shape == (2, 4)
    out = model.loss(batch, beta=0.5, k=3, j_samples=2)
    assert out["rec"].shape == (4,) and out["kl"].shape == (4,) and out["loss"].dim() == 0
    out["loss"].backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad and p.dim() > 1)


def test_loss_draws_one_psi_per_sample_plus_k_shared_mixing_draws(toy_batch, monkeypatch):
    """TextVAE.loss asks the semi-implicit posterior for J + K components (J own ψ_j, K shared), and the J
    z-samples it reconstructs from are drawn from J different ψ_j."""
    data, batch = toy_batch
    torch.manual_seed(3)
    model = TextVAE(len(data.vocab), VAEModelConfig(8, 16, 3, posterior="semi-implicit"))
    asked, seen = [], {}
    components = model.posterior.components

    def spy(h, n=1):
        asked.append(n)
        seen["mu"], seen["logvar"] = components(h, n)
        return seen["mu"], seen["logvar"]

    monkeypatch.setattr(model.posterior, "components", spy)
    reconstruction = model.reconstruction
    monkeypatch.setattr(model, "reconstruction", lambda z, b: seen.setdefault("z", z) is z and reconstruction(z, b))
    model.loss(batch, beta=1.0, k=4, j_samples=3)
    assert asked == [3 + 4]
    mu, logvar, z = seen["mu"], seen["logvar"], seen["z"]
    assert z.shape == (3, 4, 3)
    assert all(not torch.allclose(mu[:, a], mu[:, b]) and not torch.allclose(logvar[:, a], logvar[:, b])
               for a in range(3) for b in range(a))


def test_sa_components_are_refined_differentiably_in_training_and_detached_in_evaluation(toy_batch):
    """The ``sa`` posterior's components move away from the encoder's by SVI on the batch; in training the steps
    stay in the graph (the decoder's weights shape them, the encoder learns through them), in evaluation they
    are detached."""
    data, batch = toy_batch
    torch.manual_seed(4)
    model = TextVAE(len(data.vocab), VAEModelConfig(8, 16, 3, posterior="sa", posterior_options={"sa": {"steps": 3}}))
    amortised, _ = model.posterior.components(model.encode(batch.src, batch.lengths))
    mu, _ = model.train().components(batch, beta=0.5)
    assert mu.shape == amortised.shape and not torch.allclose(mu, amortised)
    grads = torch.autograd.grad(mu.sum(), [model.out.weight, model.encoder.weight_hh_l0])
    assert all(g.abs().sum() > 0 for g in grads)
    with torch.no_grad():
        evaluated, _ = model.eval().components(batch)
    assert not evaluated.requires_grad and not torch.allclose(evaluated, amortised.detach())


def test_sa_vae_trains_and_its_refined_elbo_is_at_least_the_amortised_one():
    """A tiny SA-VAE trains (encoder through the SVI steps); on the fixed test batch the ELBO evaluated after the
    refinement, averaged over five evaluation seeds, is at least the ELBO of the encoder's own q."""
    data = toy_corpus(copies=4)
    model_cfg = VAEModelConfig(8, 16, 2, posterior="sa", posterior_options={"sa": {"steps": 10, "lr": 0.1}})
    cfg = VAETrainConfig(epochs=5, batch_size=10, lr=5e-3, schedule="cyclical", cycles=1, iw_samples=3,
                         eval_components=3, seed=0)
    result = train_vae(data, model_cfg, cfg)
    assert result.history[-1]["val_elbo"] > result.history[0]["val_elbo"]
    model = result.model

    def mean_elbo(steps: int) -> float:
        model.posterior.steps = steps
        return float(np.mean([evaluate_vae(model, data.test, data.vocab, seed=s, n_components=1)["elbo"]
                              for s in range(5)]))

    amortised, refined = mean_elbo(0), mean_elbo(10)
    assert refined >= amortised, (refined, amortised)


def test_latent_initialises_state_and_feeds_every_step(toy_batch):
    data, batch = toy_batch
    torch.manual_seed(1)
    model = TextVAE(len(data.vocab), TINY).eval()
    z1, z2 = torch.zeros(1, 4, 3), torch.ones(1, 4, 3)
    diff = (model.logits(z1, batch.dec_in) - model.logits(z2, batch.dec_in)).abs().amax(dim=(0, 1, 3))
    assert (diff > 1e-4).all(), "z changes the prediction at every position"
    # with the z -> state map removed z still reaches every step through the concatenated input
    with torch.no_grad():
        model.z_to_state.weight.zero_()
    diff = (model.logits(z1, batch.dec_in) - model.logits(z2, batch.dec_in)).abs().amax(dim=(0, 1, 3))
    assert (diff > 1e-4).all()


def test_word_dropout_replaces_decoder_inputs_by_unk(toy_batch):
    data, batch = toy_batch
    torch.manual_seed(2)
    model = TextVAE(len(data.vocab), VAEModelConfig(8, 16, 3, word_dropout=1.0)).train()
    z = torch.randn(1, 4, 3)
    all_unk = batch.dec_in.clone()
    all_unk[:, 1:] = torch.where(all_unk[:, 1:] != 0, data.vocab.unk, 0)
    dropped = model.logits(z, batch.dec_in)
    model.cfg.word_dropout = 0.0
    torch.testing.assert_close(dropped, model.logits(z, all_unk))
    assert not torch.allclose(dropped, model.logits(z, batch.dec_in))


# --- metrics with known answers -------------------------------------------------------------------
def test_perplexity_and_iw_nll_known_values():
    assert perplexity(12 * math.log(7.0), 12) == pytest.approx(7.0)
    assert perplexity(1e6, 10) == math.inf and math.isnan(perplexity(math.nan, 10))  # no OverflowError
    # linear Gaussian: p(z) = N(0,1), p(x|z) = N(z,1) => p(x) = N(0,2), posterior N(x/2, 1/2); with the exact
    # posterior as proposal every importance weight equals p(x), so IW-NLL = -log p(x) for any S and z
    x = torch.tensor([0.3, -1.2, 2.0])
    post_mu, post_lv = x / 2, torch.full_like(x, math.log(0.5))
    z = post_mu + torch.randn(5, 3) * math.sqrt(0.5)
    log_joint = (diag_normal_log_prob(z[..., None], torch.zeros(1), torch.zeros(1))
                 + diag_normal_log_prob(x[None, :, None], z[..., None], torch.zeros(1)))
    log_q = diag_normal_log_prob(z[..., None], post_mu[None, :, None], post_lv[None, :, None])
    exact = -diag_normal_log_prob(x[:, None], torch.zeros(1), torch.full((1,), math.log(2.0)))
    torch.testing.assert_close(iw_nll(log_joint, log_q), exact)


def test_active_units_counts_dims_with_varying_means():
    rng = np.random.default_rng(0)
    means = np.stack([rng.normal(0, math.sqrt(0.5), 20000), rng.normal(0, math.sqrt(0.001), 20000),
                      rng.normal(0, math.sqrt(0.02), 20000), np.full(20000, 3.0)], axis=1)
    assert active_units(means) == 2
    assert active_units(means, threshold=0.0001) == 3


def test_mutual_information_bounds_are_reached():
    n, d = 8, 2
    mu = torch.randn(n, 1, d)
    same = mu[:1].expand(n, 1, d)
    z = same[:, 0] + torch.randn(n, d)
    assert mutual_information(z, same, torch.zeros(n, 1, d)) == pytest.approx(0.0, abs=1e-9)
    far = (torch.arange(n, dtype=torch.float64)[:, None, None] * 100.0).expand(n, 1, d)
    z = far[:, 0] + torch.randn(n, d, dtype=torch.float64)
    assert mutual_information(z, far, torch.zeros(n, 1, d, dtype=torch.float64)) == pytest.approx(math.log(n), rel=1e-6)


def test_semi_implicit_mutual_information_leaves_out_the_own_component():
    """z_i is drawn from component 0 of row i; every q(z_i|x_j) of the SI estimate is the mixture of the other
    components only. Counting component 0 finds z_i 'explained' by its own x_i: on x that carries no
    information (true MI 0) it reports +0.15 nats here, the leave-one-out estimate −0.25 (Jensen: the log of a
    19-component density estimate is biased low), so the two bracket the truth."""
    gen = torch.Generator().manual_seed(0)
    n, c, d = 400, 20, 1
    mu = torch.randn(n, c, d, generator=gen, dtype=torch.float64)
    logvar = torch.full((n, c, d), 2 * math.log(0.3), dtype=torch.float64)
    z = mu[:, 0] + 0.3 * torch.randn(n, d, generator=gen, dtype=torch.float64)
    loo, counted = mutual_information(z, mu, logvar), mutual_information(z, mu, logvar, leave_one_out=False)
    assert loo < 0.0 < counted and counted > 0.1
    # the estimate ignores component 0 altogether: moving it changes nothing
    moved = mu.clone()
    moved[:, 0] += 50.0
    assert mutual_information(z, moved, logvar) == loo
    # components 1.. all equal to one Gaussian per row: exactly that Gaussian's MI, whatever component 0 is
    gauss = torch.randn(n, 1, d, generator=gen, dtype=torch.float64)
    z = gauss[:, 0] + torch.randn(n, d, generator=gen, dtype=torch.float64)
    mixed = torch.cat([moved[:, :1], gauss.expand(n, c - 1, d)], 1)
    unit = torch.zeros(n, c, d, dtype=torch.float64)
    assert mutual_information(z, mixed, unit) == pytest.approx(mutual_information(z, gauss, unit[:, :1]))
    # and x that does determine z is still found: row i's draws around 10·i
    informative = mu * 0.1 + 10.0 * torch.arange(n, dtype=torch.float64)[:, None, None]
    z = informative[:, 0] + 0.3 * torch.randn(n, d, generator=gen, dtype=torch.float64)
    assert mutual_information(z, informative, logvar) == pytest.approx(math.log(n), rel=1e-3)


def test_knn_and_downstream_accuracy_on_separable_latents():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 50)
    z = rng.normal(size=(200, 2)) * 0.1 + labels[:, None] * 5.0
    assert knn_accuracy(z, labels) == 1.0
    assert 0.1 < knn_accuracy(rng.normal(size=(200, 2)), labels) < 0.45  # no information: chance level
    y = (labels >= 2).astype(int)
    acc = downstream_accuracy(z[::2], y[::2], z[1::2], y[1::2], fractions=(0.1, 1.0), seed=0)
    assert acc == {"acc_10pct": 1.0, "acc_100pct": 1.0}
    keep = labelled_subset(labels, 0.1, seed=0)  # stratified: 5 of each class's 50
    assert len(keep) == 20 and np.bincount(labels[keep]).tolist() == [5] * 4
    assert labelled_subset(labels, 0.001, seed=0).size == 4 and labelled_subset(labels, 1.0).size == 200


def test_finetune_probe_learns_the_labels_with_the_encoder_and_leaves_the_model_unchanged():
    """The eq. 2.19 probe on the toy corpus (ten sequences, label = sequence): a linear layer trained together with
    an untrained encoder learns all ten labels; the model itself is unchanged and the probe is seeded."""
    data = toy_corpus(copies=3)
    torch.manual_seed(0)
    model = TextVAE(len(data.vocab), TINY)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    kw = dict(fractions=(0.5, 1.0), steps=150, lr=1e-2, batch_size=10, n_components=1, seed=0)
    acc = finetune_accuracy(model, data.train, data.val, data.test, data.vocab, **kw)
    assert acc == {"acc_50pct": 1.0, "acc_100pct": 1.0}
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert finetune_accuracy(model, data.train, data.val, data.test, data.vocab, **{**kw, "steps": 20}) == \
        finetune_accuracy(model, data.train, data.val, data.test, data.vocab, **{**kw, "steps": 20})


@pytest.mark.parametrize("posterior", ["gaussian", "semi-implicit", "sa"])
def test_evaluate_known_answer_uniform_decoder_and_uninformative_posterior(posterior):
    """Posterior weights zero (q = N(0, I) for every x; SI mixing shift zero) and output layer zero (uniform over
    V): rec = words·log V, KL = 0, PPL = IW-PPL = V, AU = 0, MI = 0 (SA: q = N(0, I) already maximises the ELBO, so
    the SVI steps leave it there)."""
    data = toy_corpus()
    torch.manual_seed(0)
    model = TextVAE(len(data.vocab), VAEModelConfig(8, 16, 3, posterior=posterior))
    with torch.no_grad():
        for layer in (model.posterior.mu, model.posterior.logvar, model.out,
                      *([model.posterior.mix[-1]] if posterior == "semi-implicit" else [])):
            layer.weight.zero_()
            layer.bias.zero_()
    m = evaluate_vae(model, data.test, data.vocab, batch_size=4, iw_samples=7, n_components=5)
    v = len(data.vocab)
    assert m["rec"] == pytest.approx(11 * math.log(v)) and m["kl"] == pytest.approx(0.0, abs=1e-6)
    assert m["elbo"] == pytest.approx(-11 * math.log(v))
    assert m["ppl"] == pytest.approx(v) and m["iw_ppl"] == pytest.approx(v)
    assert m["au"] == 0 and m["mi"] == pytest.approx(0.0, abs=1e-6)
    assert m["means"].shape == (10, 3) and m["labels"].tolist() == list(range(10))


# --- training ---------------------------------------------------------------------------------------
def test_toy_training_learns_and_is_seeded():
    data = toy_corpus(copies=20)
    cfg = VAETrainConfig(epochs=6, batch_size=10, lr=1e-2, schedule="cyclical", cycles=2, iw_samples=3,
                      eval_components=3, seed=0, latent_samples=4)
    epochs = []
    result = train_vae(data, TINY, cfg, on_epoch=epochs.append)
    assert [e["epoch"] for e in epochs] == list(range(1, 7)) and epochs == result.history
    first, last = result.history[0], result.history[-1]
    torch.manual_seed(0)
    untrained = evaluate_vae(TextVAE(len(data.vocab), TINY), data.test, data.vocab)["elbo"]  # ~ -11·log 6
    assert untrained < -15.0 and result.test["elbo"] > untrained + 10.0 and last["val_elbo"] > first["val_elbo"]
    assert result.test["rec"] < 5.0  # the marginal alone needs log 10 = 2.3 nats
    assert result.tokens_per_second > 0 and result.test["samples"].shape == (10, 4, 3)
    again = train_vae(data, TINY, cfg)
    assert again.history[-1]["val_elbo"] == pytest.approx(last["val_elbo"])


def test_training_ramps_monotonic_beta_over_the_first_quarter_and_caps_it_at_beta_max():
    """train_vae passes the schedule's own R and β_max: 8 epochs of 2 iterations (T = 16), monotonic R = 0.25
    by default, so β reaches 1 at iteration 5 (the first of epoch 3) after 2 epochs = 25 % of training; with
    β_max = 0.5 β stops there and K still reaches k_max (K follows β / β_max); the AE schedule trains β = 0."""
    data = toy_corpus(copies=2)
    base = dict(epochs=8, batch_size=10, iw_samples=0, eval_components=2, mi_rows=10, seed=0)
    model_cfg = VAEModelConfig(8, 16, 2, posterior="semi-implicit")
    betas = [h["beta"] for h in train_vae(data, TINY, VAETrainConfig(schedule="monotonic", **base)).history]
    assert betas[:3] == pytest.approx([1 / 4, 3 / 4, 1.0]) and betas[3:] == [1.0] * 5
    half = train_vae(data, model_cfg, VAETrainConfig(schedule="monotonic", beta_max=0.5, k_max=6, **base)).history
    assert max(h["beta"] for h in half) == 0.5 and half[-1]["k"] == 6 and half[0]["k"] < 6
    same = train_vae(data, model_cfg, VAETrainConfig(schedule="monotonic@0.5", k_max=6, **base)).history
    assert [h["beta"] for h in same] == [h["beta"] for h in half]
    ae = train_vae(data, model_cfg, VAETrainConfig(schedule="ae", k_max=6, k_min=1, **base)).history
    assert {h["beta"] for h in ae} == {0.0} and {h["k"] for h in ae} == {1}


def test_aggressive_training_takes_inner_encoder_steps_then_switches_off():
    data = toy_corpus(copies=4)
    cfg = VAETrainConfig(epochs=4, batch_size=10, schedule="constant", aggressive=True, aggressive_max_steps=6,
                      aggressive_window=2, iw_samples=0, eval_components=2, seed=1)
    history = train_vae(data, TINY, cfg).history
    assert history[0]["aggressive"] and 4 * 4 <= history[0]["inner_steps"] <= 4 * 6  # 4 outer steps per epoch
    flags = [h["aggressive"] for h in history]
    assert flags == sorted(flags, reverse=True), "once off, aggressive training stays off"
    mis = [h["val_mi"] for h in history]
    for i in range(1, len(history)):
        if history[i - 1]["aggressive"] and not history[i]["aggressive"]:
            assert mis[i - 1] <= max(mis[:i - 1], default=-math.inf), "switched off after MI stopped rising"


def test_aggressive_training_of_an_sa_vae_takes_its_inner_steps_through_the_refinement():
    data = toy_corpus(copies=2)
    model_cfg = VAEModelConfig(8, 16, 2, posterior="sa", posterior_options={"sa": {"steps": 2}})
    cfg = VAETrainConfig(epochs=2, batch_size=10, schedule="constant", aggressive=True, aggressive_max_steps=2,
                         aggressive_window=1, iw_samples=2, eval_components=1, seed=0)
    result = train_vae(data, model_cfg, cfg)
    assert result.history[0]["aggressive"] and result.history[0]["inner_steps"] >= 2
    assert all(math.isfinite(h["train_elbo"]) and math.isfinite(h["val_elbo"]) for h in result.history)
    assert math.isfinite(result.test["iw_ppl"])


@pytest.mark.parametrize("downstream", [True, "logistic", "finetune"])
def test_tune_adapter_reports_epochs_and_final_metrics_with_downstream(yelp_dir, downstream):
    """The trainable's core without Ray: per-epoch reports, then test metrics, tokens/s and label accuracies (either
    probe; True is the logistic one)."""
    from trainables.text.vae_tune import TEST_METRICS, run_configuration

    config = {"dataset": "yelp", "data_dir": str(yelp_dir), "downstream": downstream, "finetune_steps": 4,
              "data": {"max_len": 6, "min_freq": 2, "val_frac": 0.2, "test_frac": 0.2, "seed": 0},
              "model": {"emb_dim": 8, "hidden_dim": 16, "latent_dim": 3, "posterior": "semi-implicit"},
              "train": {"epochs": 3, "batch_size": 8, "schedule": "monotonic", "k_max": 2, "iw_samples": 2,
                        "eval_components": 2, "seed": 0}}
    reports = []
    final = run_configuration(config, reports.append)
    assert [r["epoch"] for r in reports] == [1, 2] and final["epoch"] == 3 and final["final"] is True
    assert all(math.isfinite(final[m]) for m in TEST_METRICS) and final["tokens_per_s"] > 0
    assert {"acc_1pct", "acc_10pct", "acc_100pct"} <= set(final) and 0 <= final["acc_100pct"] <= 1
    assert final["data_seconds"] > 0 and run_configuration(config, reports.append)["data_seconds"] == 0.0  # cached
    diverged = run_configuration({**config, "train": {**config["train"], "lr": 1e9}}, reports.append)
    assert "diverged" in diverged["error"] and diverged["final"] is True


def test_trace_points_every_n_iterations_without_changing_the_training():
    """A trace point every ``trace_every`` iterations: the iteration, β_t, K_t, the training rec/KL averaged
    since the previous point and the validation KL/MI/AU of the first ``trace_rows`` sentences; the training
    itself (history, test metrics) is bit-identical to one without a trace."""
    from trainables.text.data import load_text_data
    from trainables.text.vae_model import TRACE_KEYS

    data = load_text_data("toy", None, copies=4)  # 40 sentences, batch 10: 4 iterations per epoch
    model = VAEModelConfig(emb_dim=8, hidden_dim=16, latent_dim=2, posterior="semi-implicit")
    train = dict(epochs=3, batch_size=10, schedule="cyclical", cycles=2, k_max=4, iw_samples=2, eval_components=3,
                 seed=1)
    plain = train_vae(data, model, VAETrainConfig(**train))
    traced = train_vae(data, model, VAETrainConfig(**train, trace_every=4, trace_rows=4))
    assert plain.trace == {} and plain.history == traced.history and plain.test["elbo"] == traced.test["elbo"]
    assert list(traced.trace) == list(TRACE_KEYS)
    assert traced.trace["iteration"] == [4.0, 8.0, 12.0], "12 iterations, a point every 4"
    from trainables.text.beta_schedules import make_schedule

    beta = make_schedule("cyclical", 12, cycles=2, ratio=0.5)
    assert traced.trace["beta"] == [beta(t) for t in (4, 8, 12)]
    assert traced.trace["k"] == [round(4 * beta.level(t)) for t in (4, 8, 12)]
    # The last point follows the last update: it is the final model on the first 4 validation sentences.
    first4 = TextSplit(data.val.sentences[:4], data.val.labels[:4])
    last = evaluate_vae(traced.model, first4, data.vocab, iw_samples=0, mi_rows=4, n_components=3,
                        seed=1 + 104_729 + 12)
    assert [traced.trace[f"val_{m}"][-1] for m in ("rec", "kl", "mi", "au")] == pytest.approx(
        [last[m] for m in ("rec", "kl", "mi", "au")])
    for key in TRACE_KEYS:
        assert all(math.isfinite(x) for x in traced.trace[key]), key
    assert all(x > 0 for x in traced.trace["train_rec"]) and all(x >= 0 for x in traced.trace["val_kl"])


def test_tune_adapter_returns_the_trace_as_rows_in_trace_keys_order():
    from trainables.text.vae_model import TRACE_KEYS
    from trainables.text.vae_tune import run_configuration

    config = {"dataset": "toy", "data_dir": None, "data": {"copies": 3},
              "model": {"emb_dim": 8, "hidden_dim": 16, "latent_dim": 2},
              "train": {"epochs": 2, "batch_size": 10, "schedule": "monotonic", "iw_samples": 0, "seed": 0,
                        "trace_every": 2, "trace_rows": 5}}
    final = run_configuration(config, lambda row: None)
    assert [row[0] for row in final["trace"]] == [2.0, 4.0, 6.0]
    assert all(len(row) == len(TRACE_KEYS) for row in final["trace"])
    untraced = run_configuration({**config, "train": {**config["train"], "trace_every": 0}}, lambda row: None)
    assert "trace" not in untraced
