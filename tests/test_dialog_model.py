"""Dialog CVAE: shapes, the KL against the learned prior (Gaussian: analytic and >= 0; semi-implicit: kl_bound's
structure), a few steps lower the loss for both posteriors with act knowledge and the bag-of-words loss on and
off, seeded determinism, aggressive training and a whole tiny training with its test metrics."""
import math

import pytest
import torch
from test_dialog_data import synthetic, write_dialogs

from trainables.text.dialog_data import load_swda, make_batch
from trainables.text.dialog_metrics import word_vectors
from trainables.text.dialog_model import (
    DialogCVAE,
    DialogModelConfig,
    DialogTrainConfig,
    kl_to_prior,
    train_dialog,
)
from trainables.text.posteriors import gaussian_kl_to, kl_bound

TINY = dict(emb_dim=8, utt_hidden=8, ctx_hidden=12, dec_hidden=12, mlp_hidden=8, latent_dim=3, act_dim=4,
            posterior_options={"semi-implicit": {"noise_dim": 2, "mix_hidden": 8}})


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models: one thread is fastest, and on a loaded machine several threads wait for each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("swda")
    write_dialogs(root / "swda" / "valid.jsonl", synthetic(10, length=8))
    return load_swda(root, val_frac=0.2, test_frac=0.2, min_freq=1, context_window=3)


def model_of(data, posterior="gaussian", act=True, seed=0, bow=True) -> DialogCVAE:
    torch.manual_seed(seed)
    return DialogCVAE(data.vocab, len(data.acts), DialogModelConfig(posterior=posterior, act_knowledge=act, bow=bow,
                                                                    **TINY))


def test_gaussian_kl_to_a_learned_prior_is_analytic_and_non_negative():
    zero = torch.zeros(1, 2)
    assert gaussian_kl_to(zero, zero, torch.ones(1, 2), zero).item() == pytest.approx(1.0)  # ½ (μ − m)² per dim
    # KL(N(0, 1) ‖ N(0, e²)) = ½ (2 − 0 + e^-2 − 1) per dim
    assert gaussian_kl_to(zero, zero, zero, 2 + zero).item() == pytest.approx(2 * 0.5 * (1 + math.exp(-2)))
    g = torch.Generator().manual_seed(0)
    mu, lv, pm, plv = (torch.randn(64, 1, 5, generator=g) for _ in range(4))
    kl, z = kl_to_prior(mu, lv, pm[:, 0], plv[:, 0], j_samples=3)
    assert z.shape == (3, 64, 5) and (kl >= 0).all()
    assert torch.allclose(kl, gaussian_kl_to(mu[:, 0], lv[:, 0], pm[:, 0], plv[:, 0]))


@pytest.mark.parametrize("components,j", [(1, 2), (6, 2)])
def test_kl_to_a_standard_normal_prior_is_kl_bound(components, j):
    g = torch.Generator().manual_seed(1)
    mu, lv = torch.randn(8, components, 4, generator=g), torch.randn(8, components, 4, generator=g)
    torch.manual_seed(5)
    ours = kl_to_prior(mu, lv, torch.zeros(8, 4), torch.zeros(8, 4), j)
    torch.manual_seed(5)
    theirs = kl_bound(mu, lv, j)
    assert torch.allclose(ours[0], theirs[0], atol=1e-6) and torch.allclose(ours[1], theirs[1])
    with pytest.raises(ValueError, match="cannot give each"):
        kl_to_prior(mu[:, :1].expand(-1, 2, -1), lv[:, :1].expand(-1, 2, -1), mu[:, 0], lv[:, 0], 3)


@pytest.mark.parametrize("posterior,act,bow", [("gaussian", True, True), ("gaussian", False, False),
                                               ("semi-implicit", True, False), ("semi-implicit", False, True)])
def test_shapes_and_a_few_steps_lower_the_loss(data, posterior, act, bow):
    model = model_of(data, posterior, act, bow=bow)
    batch = make_batch(data.train, list(range(6)), data.vocab)
    c, x = model.encode(batch)
    assert c.shape == (6, 12) and x.shape == (6, 16)
    out = model(batch, beta=1.0, k=4, j_samples=2)
    assert {k: tuple(v.shape) for k, v in out.items() if k != "loss"} == {
        "rec": (6,), "kl": (6,), **({"bow": (6,)} if bow else {}), **({"act": (6,)} if act else {})}
    assert hasattr(model, "act_head") == act and hasattr(model, "bow") == bow
    tokens, acts = model.generate(batch, n=3, max_len=5)
    assert tokens.shape[:2] == (3, 6) and tokens.shape[2] <= 6 and (acts is None) != act
    ends = (tokens == data.vocab.eos).int()
    assert (ends.sum(-1) == 1).all(), "every response ends with one </s>, within max_len words"
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    losses = []
    torch.manual_seed(0)
    for _ in range(25):
        loss = model(batch, beta=1.0, k=4)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5


def test_the_loss_adds_the_weighted_bag_of_words_term_only_with_bow(data):
    batch = make_batch(data.train, list(range(6)), data.vocab)
    for bow in (True, False):
        model = model_of(data, act=False, bow=bow)
        model.cfg.bow_weight = 0.5
        torch.manual_seed(0)
        out = model(batch, beta=0.3)
        expected = out["rec"] + 0.3 * out["kl"] + (0.5 * out["bow"] if bow else 0)
        assert out["loss"].item() == pytest.approx(expected.mean().item(), rel=1e-6)


def test_parameter_groups_split_recognition_from_the_rest(data):
    model = model_of(data, "semi-implicit")
    enc, dec = model.encoder_parameters(), model.decoder_parameters()
    assert {id(p) for p in enc} == {id(p) for p in model.posterior.parameters()}
    assert len(enc) + len(dec) == len(list(model.parameters())) and not {id(p) for p in enc} & {id(p) for p in dec}


def test_training_is_seeded_reports_every_epoch_and_tests_generation(data):
    vectors = word_vectors(data.train.utts, len(data.vocab), dim=4)
    cfg = DialogTrainConfig(epochs=2, batch_size=8, lr=0.01, schedule="cyclical", cycles=1, k_max=3, samples=2,
                            gen_max_len=6, eval_components=4, seed=3)
    rows = []
    first = train_dialog(data, DialogModelConfig(posterior="semi-implicit", **TINY), cfg, vectors=vectors,
                         on_epoch=rows.append)
    again = train_dialog(data, DialogModelConfig(posterior="semi-implicit", **TINY), cfg, vectors=vectors)
    assert [r["epoch"] for r in rows] == [1, 2] and rows == first.history == again.history
    assert {k: v for k, v in first.test.items()} == {k: v for k, v in again.test.items()}
    test = first.test
    for key in ("rec", "kl", "rec_ppl", "ppl", "mi", "bleu4_p", "bleu4_r", "bleu4_f1", "bow_avg_p", "bow_greedy_r",
                "intra_dist2", "inter_dist2", "response_len", "act_acc"):
        assert math.isfinite(test[key]), key
    assert 0 <= test["response_len"] <= cfg.gen_max_len and test["bow_extrema_p"] <= test["bow_extrema_r"] + 1e-12
    assert test["rec_ppl"] == pytest.approx(math.exp(test["rec"] * len(data.test) / data.test.n_words))
    assert test["ppl"] == pytest.approx(math.exp((test["rec"] + test["kl"]) * len(data.test) / data.test.n_words))
    assert test["elbo"] == pytest.approx(-(test["rec"] + test["kl"]))
    assert 0 <= test["bleu4_p"] <= test["bleu4_r"] <= 1 and 0 <= test["act_acc"] <= 1
    assert len(test["examples"]) == 3 and len(test["examples"][0]["samples"]) == 2


def test_aggressive_training_takes_inner_steps_and_switches_off(data):
    cfg = DialogTrainConfig(epochs=3, batch_size=16, schedule="monotonic", aggressive=True, aggressive_max_steps=3,
                            aggressive_window=1, samples=0)
    history = train_dialog(data, DialogModelConfig(**TINY), cfg).history
    assert history[0]["aggressive"] and history[0]["inner_steps"] > 0
    assert all(h["inner_steps"] == 0 for h in history if not h["aggressive"])


def sa_model(data, steps: int, lr: float = 0.1, seed: int = 0) -> DialogCVAE:
    torch.manual_seed(seed)
    options = {**TINY["posterior_options"], "sa": {"steps": steps, "lr": lr}}
    return DialogCVAE(data.vocab, len(data.acts), DialogModelConfig(posterior="sa", **{**TINY,
                                                                                      "posterior_options": options}))


def test_sa_with_zero_steps_is_the_gaussian_posterior(data):
    batch = make_batch(data.train, list(range(6)), data.vocab)
    gaussian, sa = model_of(data, "gaussian"), sa_model(data, steps=0)
    sa.load_state_dict(gaussian.state_dict())
    torch.manual_seed(4)
    a = gaussian(batch, beta=0.5, j_samples=2)["loss"]
    torch.manual_seed(4)
    assert sa(batch, beta=0.5, j_samples=2)["loss"].item() == pytest.approx(a.item(), rel=1e-6)


def test_sa_refines_the_posterior_by_svi_and_trains_through_the_steps(data):
    model = sa_model(data, steps=5)
    batch = make_batch(data.train, list(range(8)), data.vocab)
    c, x = model.encode(batch)
    prior = model.prior_params(c)
    mu0, lv0 = model.components(c, x, batch.act)

    def neg_elbo(mu, logvar):  # rec + KL averaged over 64 z draws, summed over the responses
        kl, z = kl_to_prior(mu, logvar, *prior, j_samples=64)
        return float((model.decode_terms(c, z, batch)["rec"] + kl).sum())

    model.eval()
    torch.manual_seed(0)
    with torch.no_grad():
        mu, lv = model.posterior_params(c, x, batch, 1, prior)
        assert not mu.requires_grad and mu.shape == mu0.shape and not torch.allclose(mu, mu0)
        torch.manual_seed(1)
        before = neg_elbo(mu0, lv0)
        torch.manual_seed(1)
        assert neg_elbo(mu, lv) < before, "SVI lowers the test objective"
    model.train()
    model(batch, beta=1.0)["loss"].backward()
    grad = model.posterior.mu.weight.grad
    assert grad is not None and grad.abs().sum() > 0
    cfg = DialogTrainConfig(epochs=1, batch_size=16, samples=0, seed=1)
    test = train_dialog(data, DialogModelConfig(posterior="sa", **{**TINY, "posterior_options": {
        "sa": {"steps": 2, "lr": 0.1}}}), cfg).test
    assert all(math.isfinite(test[k]) for k in ("rec", "kl", "mi"))
