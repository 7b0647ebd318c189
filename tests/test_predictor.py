"""Predictor contract: every entry of PREDICTORS is tested the moment it is registered."""
import pickle

import numpy as np
import pytest
import torch

from search_space import SearchSpace, encode_many
from search_space.predictor import PREDICTORS, Predictor, load_predictor, make_predictor, pairwise_hinge, validate

TAU_MIN = 0.6  # validation Kendall tau every predictor must reach on the synthetic target
FAST = {"mlp": {"epochs": 60}, "mlp-ensemble": {"n_members": 3, "epochs": 60}}  # keep the suite quick
NAMES = list(PREDICTORS)


def fast(name, **kw):
    return make_predictor(name, **{**FAST.get(name, {}), **kw})


@pytest.fixture(scope="module")
def data():
    """Encodings of 600 sampled genotypes; target = fixed random linear + pairwise function + small noise."""
    X = encode_many(SearchSpace().sample_many(600, seed=0)).astype(np.float64)
    rng = np.random.default_rng(123)
    lin = X @ rng.normal(size=X.shape[1])
    pair = np.einsum("nd,de,ne->n", X, np.triu(rng.normal(size=(X.shape[1],) * 2), 1), X)
    y = 0.8 + 0.05 * (lin / lin.std() + pair / pair.std() + 0.1 * rng.normal(size=len(X)))
    return X.astype(np.float32), y


@pytest.fixture(scope="module")
def small(data):
    return data[0][:120], data[1][:120]


@pytest.mark.parametrize("name", NAMES)
def test_predict_shape_dtype_and_scale(name, small):
    X, y = small
    p = fast(name).fit(X, y)
    out = p.predict(X[:7])
    assert out.shape == (7,) and out.dtype == np.float64 and np.isfinite(out).all()
    assert abs(p.predict(X).mean() - y.mean()) < 0.25 * y.std()  # on the scale of y, not standardised


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_given_seed_and_global_rng_untouched(name, small):
    X, y = small
    torch_state, np_state = torch.get_rng_state(), np.random.get_state()
    a = fast(name).fit(X, y, seed=3).predict(X)
    b = fast(name).fit(X, y, seed=3).predict(X)
    assert np.array_equal(a, b)
    assert torch.equal(torch_state, torch.get_rng_state())
    assert all(np.array_equal(u, v) for u, v in zip(np_state, np.random.get_state()))
    if PREDICTORS[name].stochastic:
        assert not np.array_equal(a, fast(name).fit(X, y, seed=4).predict(X))


@pytest.mark.parametrize("name", NAMES)
def test_pickle_round_trip(name, small):
    X, y = small
    p = fast(name).fit(X, y)
    q = pickle.loads(pickle.dumps(p))
    assert np.array_equal(p.predict(X), q.predict(X))
    pickle.loads(pickle.dumps(fast(name)))  # unfitted too


@pytest.mark.parametrize("name", NAMES)
def test_save_load_round_trip_without_pickle(name, small, tmp_path):
    X, y = small
    p = fast(name).fit(X, y, seed=2)
    p.save(tmp_path / "p.npz")
    q = load_predictor(tmp_path / "p.npz")
    assert type(q) is type(p) and repr(q) == repr(p)
    assert np.array_equal(p.predict(X), q.predict(X))
    with pytest.raises(RuntimeError, match="fit"):
        fast(name).save(tmp_path / "unfitted.npz")


def test_load_predictor_refuses_pickles_and_garbage(tmp_path):
    marker = tmp_path / "ran"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (tmp_path / "evil.npz").write_bytes(pickle.dumps(Exploit()))
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object))
    (tmp_path / "empty.npz").write_bytes(b"")
    for name in ("evil.npz", "objects.npy", "empty.npz", "missing.npz"):
        with pytest.raises(ValueError, match="not a saved predictor") as err:
            load_predictor(tmp_path / name)
        assert "\n" not in str(err.value)
    assert not marker.exists()


@pytest.mark.parametrize("name", NAMES)
def test_errors(name, small):
    X, y = small
    with pytest.raises(RuntimeError, match="fit"):
        fast(name).predict(X)
    p = fast(name)
    for bad_X, bad_y, arg in [(X[0], y, "X"), (X, y[:-1], "y"), (X, y[:, None], "y"), (X[:1], y[:1], "2 samples"),
                              (X, np.where(np.arange(len(y)) == 5, np.nan, y), "y: contains NaN")]:
        with pytest.raises(ValueError, match=arg):
            p.fit(bad_X, bad_y)
    p.fit(X, y)
    with pytest.raises(ValueError, match="X: expected 120 features"):
        p.predict(X[:, :-1])


@pytest.mark.parametrize("name", NAMES)
def test_learns_synthetic_target(name, data):
    p, m = validate(name, *data, **FAST.get(name, {}))
    assert m["n_train"] == 510 and m["n_val"] == 90 and isinstance(p, PREDICTORS[name])
    assert m["kendall_tau"] >= TAU_MIN and m["pearson_rho"] >= TAU_MIN, m


@pytest.mark.parametrize("name", NAMES)
def test_shuffled_labels_score_near_zero(name, data):
    X, y = data
    _, m = validate(name, X, np.random.default_rng(0).permutation(y), val_fraction=0.5, **FAST.get(name, {}))
    assert abs(m["kendall_tau"]) < 0.15, m  # 300 validation points: the null's std is about 0.04


class Constant(Predictor):
    name = "constant"

    def _fit(self, X, z, seed):
        pass

    def _predict(self, X):
        return np.zeros(len(X))


def test_constant_predictor_fails_threshold_and_metrics_are_nan_safe(data):
    X, y = data
    _, m = validate(Constant(), X, y)
    assert m == {"kendall_tau": 0.0, "pearson_rho": 0.0, "n_train": 510, "n_val": 90}
    assert all(type(m[k]) is float for k in ("kendall_tau", "pearson_rho"))
    _, m = validate("ridge", X[:40], np.ones(40), val_fraction=0.25)  # constant targets
    assert (m["kendall_tau"], m["pearson_rho"], m["n_val"]) == (0.0, 0.0, 10)
    with pytest.raises(ValueError, match="kwargs"):
        validate(Constant(), X, y, epochs=3)


def test_ensemble_std(small):
    X, y = small
    p = fast("mlp-ensemble").fit(X, y)
    std = p.predict_std(X)
    assert std.shape == (len(X),) and std.dtype == np.float64 and (std >= 0).all() and std.max() > 0
    assert len({tuple(m) for m in p._members(X[:3])}) == 3  # members differ


def test_pairwise_hinge():
    target = torch.tensor([3.0, 2.0, 1.0, 1.0])
    assert pairwise_hinge(torch.tensor([30.0, 20.0, 10.0, 0.0]), target, margin=1.0) == 0  # ordered, tie skipped
    assert pairwise_hinge(-target, target, margin=0.0) > 0
    assert pairwise_hinge(target, torch.ones(4), margin=1.0) == 0  # no untied pair
