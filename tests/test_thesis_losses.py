"""The losses as the thesis means them (issue 13 item 7): the preset's (λ, α, β) rows of Table 4.3 give exactly
the written objectives, T² is an explicit option, and the predictor's ranking weight is a setting that changes
the fitted predictor."""
import fake_stages
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipelines.nas.settings import distill_args, load_config
from search_space import SearchSpace, encode_many, load_predictor, make_predictor
from trainables.image.losses import make_objective

B, B_OUT, C, T = 16, 24, 6, 20.0


def tensors(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    logits_in, logits_out = torch.randn(B, C, generator=g) * 3, torch.randn(B_OUT, C, generator=g) * 3
    labels = torch.randint(0, C, (B,), generator=g)
    teacher_in = torch.softmax(torch.randn(B, C, generator=g) * 2, 1)
    teacher_out = torch.softmax(torch.randn(B_OUT, C, generator=g) * 2, 1)
    return logits_in, labels, logits_out, teacher_in, teacher_out


def hand_written(row, t_squared, logits_in, labels, logits_out, teacher_in, teacher_out):
    """Table 4.3's rows written out: CE(y, P_s), L_DS = -Σ P_t log softmax(z/T) (× T² if t_squared),
    CE(U, P_s) = -mean_c log P_s,c; every term a batch mean."""
    scale = T * T if t_squared else 1.0
    ce = -torch.log_softmax(logits_in, 1)[torch.arange(B), labels].mean()
    ds_in = -(teacher_in * torch.log_softmax(logits_in / T, 1)).sum(1).mean() * scale
    uniform_out = -torch.log_softmax(logits_out, 1).mean(1).mean()
    ds_out = -(teacher_out * torch.log_softmax(logits_out / T, 1)).sum(1).mean() * scale
    return {
        "ce": ce,                                                        # (0, 0, –)
        "id-distill": 0.5 * ce + 0.5 * ds_in,                            # (0, 0.5, –)
        "oe+id-distill": 0.5 * ce + 0.5 * ds_in + 0.5 * uniform_out,     # (0.5, 0.5, 0)
        "full": 0.5 * ce + 0.5 * ds_in + 0.5 * (0.8 * uniform_out + 0.2 * ds_out),  # (0.5, 0.5, 0.2)
    }[row]


ROWS = [("ce", 0.0, 0.0, 0.2), ("id-distill", 0.0, 0.5, 0.2), ("oe+id-distill", 0.5, 0.5, 0.0),
        ("full", 0.5, 0.5, 0.2)]


@pytest.mark.parametrize("t_squared", [True, False])
@pytest.mark.parametrize("row, lam, alpha, beta", ROWS)
def test_table_4_3_rows_are_the_written_objectives(row, lam, alpha, beta, t_squared, tmp_path):
    sets = [f"distill.lam={lam}", f"distill.alpha={alpha}", f"distill.beta={beta}", f"distill.t_squared={t_squared}",
            f"distill.temperature={T}"]
    flow = fake_stages.make_flow(tmp_path, *sets)
    args = flow.distill_train()["objective_args"]
    assert args == distill_args(flow.cfg) == {"temperature": T, "alpha": alpha, "beta": beta, "lam": lam,
                                              "t_squared": t_squared}
    objective = make_objective("distill", **args)
    assert objective.needs_teacher == (row != "ce") and objective.needs_outliers == (lam > 0)
    for seed in range(3):
        logits_in, labels, logits_out, teacher_in, teacher_out = tensors(seed)
        expected = hand_written(row, t_squared, logits_in, labels, logits_out, teacher_in, teacher_out)
        got = objective(logits_in, labels, logits_out if lam > 0 else None, teacher_in if alpha > 0 else None,
                        teacher_out if lam > 0 and beta > 0 else None)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    if row == "ce":  # plain cross-entropy: no teacher and no outlier input used
        torch.testing.assert_close(objective(logits_in, labels), F.cross_entropy(logits_in, labels))


def test_t_squared_default_and_check():
    assert load_config("quick")["distill"]["t_squared"] is True
    from pipelines.common.settings import ConfigError

    with pytest.raises(ConfigError, match="distill.t_squared"):
        load_config("quick", ["distill.t_squared=maybe"])


def test_rank_weight_changes_the_fitted_predictor():
    genotypes = SearchSpace().sample_many(40, seed=0)
    X = encode_many(genotypes)
    y = X[:, :15].sum(1) + np.random.default_rng(0).normal(0, 1.0, len(X))
    predictions = {w: make_predictor("mlp", epochs=30, rank_weight=w).fit(X, y, seed=0).predict(X) for w in (0.0, 1.0)}
    assert not np.allclose(predictions[0.0], predictions[1.0])


@pytest.fixture
def fake(monkeypatch):
    return fake_stages.install(monkeypatch)


def test_the_preset_rank_weight_reaches_the_predictor_stage(fake, tmp_path):

    fitted = {}
    for w in (0.0, 1.0):
        flow = fake_stages.make_flow(tmp_path, "predictor.name=mlp", "warmup.n=14",
                                     f"predictor.args={{epochs: 20, rank_weight: {w}}}", name=f"run{w}")
        records, _ = flow.distill(flow.warmup())
        flow.predictor(records)
        fitted[w] = load_predictor(flow.run / "predictor" / "predictor.npz")
        assert fitted[w].rank_weight == w
    X = encode_many(SearchSpace().sample_many(10, seed=3))
    assert not np.allclose(fitted[0.0].predict(X), fitted[1.0].predict(X))
