"""The Ray Tune adapter of the candidate trainer."""
import math

from search_space import SearchSpace
from trainables.image import TrainConfig, make_protocol, train_candidate
from trainables.image.tune_trainable import _DATA, TeacherBundle, candidate_trainable

TRAIN = {"epochs": 1, "width": 4, "batch_size": 64, "flip": False, "scores": ["msp", "energy", "maha"]}


def config(seed=0, **train):
    return {"genotype": SearchSpace().sample(seed).to_json(), "protocol": "digits", "protocol_options": {},
            "train": {**TRAIN, **train}, "seed": 1, "stage": "warmup", "iteration": 0}


def test_direct_call_caches_data_and_reports_identity():
    _DATA.clear()
    first = candidate_trainable(config(0))
    second = candidate_trainable(config(1))
    assert first["data_seconds"] > 0 and second["data_seconds"] == 0.0, "protocol loaded once per process"
    assert first["stage"] == "warmup" and first["seed"] == 1 and first["error"] is None
    assert 0 <= first["auroc_msp"] <= 1 and "state_dict" not in first
    assert first["trainable_seconds"] >= first["train_seconds"]


def test_divergence_is_reported_not_raised():
    r = candidate_trainable(config(2, lr=1e12))
    assert r["error"].startswith("diverged:") and math.isnan(r["auroc_msp"])


def test_teachers_are_built_once_per_bundle():
    import pickle

    import torch

    protocol = make_protocol("digits")
    g = SearchSpace().sample(9)
    state = train_candidate(g, protocol, TrainConfig(**{**TRAIN, "scores": ("msp",)}))["state_dict"]
    bundle = TeacherBundle([g.to_json()], [state], width=4)
    first = bundle.build(6, 1, torch.device("cpu"))
    again = pickle.loads(pickle.dumps(bundle)).build(6, 1, torch.device("cpu"))  # as a worker receives it
    assert again is first and not first[0].training
    other = TeacherBundle([g.to_json()], [state], width=4).build(6, 1, torch.device("cpu"))
    assert other is not first, "a new bundle (next iteration's teachers) is built afresh"


def test_bundle_weights_travel_as_numpy_and_rebuild_exactly():
    """Pickled (as the object store holds it), every weight is a numpy array (zero-copy in Ray); the rebuilt
    teacher equals the original bit for bit, also from read-only arrays as ``ray.get`` returns them."""
    import pickle

    import numpy as np
    import torch

    from search_space import build_network

    g = SearchSpace().sample(9)
    state = build_network(g, 6, 1, 4).state_dict()
    received = pickle.loads(pickle.dumps(TeacherBundle([g.to_json()], [state], width=4)))
    assert all(isinstance(v, np.ndarray) for v in received.state_dicts[0].values())
    for v in received.state_dicts[0].values():
        v.setflags(write=False)
    model = received.build(6, 1, torch.device("cpu"))[0]
    for key, value in model.state_dict().items():
        assert value.dtype == state[key].dtype and torch.equal(value, state[key]), key
    half = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in state.items()}
    kept = pickle.loads(pickle.dumps(TeacherBundle([g.to_json()], [half], width=4))).weights(0)
    assert all(torch.equal(kept[k], v) and kept[k].dtype == v.dtype for k, v in half.items()), "numpy has no bf16"


def test_cached_teacher_probabilities_are_computed_once_per_bundle():
    import pickle

    import torch

    from trainables.image import TeacherCache
    from trainables.image.tune_trainable import device_data

    g = SearchSpace().sample(9)
    data, _ = device_data("digits", {}, torch.device("cpu"))
    state = train_candidate(g, data, TrainConfig(**{**TRAIN, "scores": ("msp",)}))["state_dict"]
    bundle = TeacherBundle([g.to_json()], [state], width=4)
    train = TrainConfig(**{**TRAIN, "objective": "distill", "teacher_mode": "cached"})
    first = bundle.teachers_for(data, train)
    assert isinstance(first, TeacherCache) and first.train.shape == (len(data.train_y), 6)
    for _ in range(2):  # later candidates on the same worker reuse modules and cache
        assert pickle.loads(pickle.dumps(bundle)).teachers_for(data, train) is first
    assert isinstance(bundle.teachers_for(data, train.replace(teacher_mode="online")), list)


def test_in_tune_with_teachers_in_the_object_store(ray_local, tmp_path):
    from ray import tune

    protocol = make_protocol("digits")
    teacher_genotype = SearchSpace().sample(9)
    trained = train_candidate(teacher_genotype, protocol, TrainConfig(**{**TRAIN, "scores": ("msp",)}))
    bundle = TeacherBundle([teacher_genotype.to_json()], [trained["state_dict"]], width=4)
    space = {**config(0, objective="distill"), "genotype": tune.grid_search(
        [g.to_json() for g in SearchSpace().sample_many(2, seed=3)])}
    tuner = tune.Tuner(tune.with_parameters(candidate_trainable, teachers=bundle), param_space=space,
                       tune_config=tune.TuneConfig(reuse_actors=True, max_concurrent_trials=1),
                       run_config=tune.RunConfig(storage_path=str(tmp_path), verbose=0))
    results = tuner.fit()
    assert not results.errors
    frame = results.get_dataframe()
    assert len(frame) == 2 and frame["auroc_msp"].between(0, 1).all()
    assert (frame["data_seconds"] == 0).sum() >= 1, "the reused actor kept the protocol"


def test_distill_without_auxiliary_outliers_trains_with_lam_zero():
    from types import SimpleNamespace

    import torch

    from trainables.image.tune_trainable import stage_train_config

    cfg = {"train": {**TRAIN, "objective": "distill", "objective_args": {"lam": 0.5, "alpha": 0.5}}, "seed": 3}
    no_aux = stage_train_config(cfg, SimpleNamespace(aux=None), torch.device("cpu"))
    assert no_aux.objective_args == {"lam": 0.0, "alpha": 0.5} and no_aux.seed == 3
    with_aux = stage_train_config(cfg, SimpleNamespace(aux=torch.zeros(4, 1, 8, 8)), torch.device("cpu"))
    assert with_aux.objective_args["lam"] == 0.5


def test_tune_trials_report_every_epoch_and_carry_the_curve(ray_local, tmp_path):
    """Inside Tune, every epoch is a result (TensorBoard curves; schedulers can act on them); the last result
    carries the whole curve. A direct call reports nothing per epoch."""
    import json

    from ray import tune

    direct = candidate_trainable(config(0, epochs=2))
    assert [e["epoch"] for e in json.loads(direct["epoch_curve"])] == [1, 2]
    grid = tune.Tuner(candidate_trainable, param_space=config(0, epochs=3, eval_every=1),
                      run_config=tune.RunConfig(storage_path=str(tmp_path), verbose=0)).fit()
    result = grid[0]
    frame = result.metrics_dataframe
    assert list(frame["epoch"]) == [1, 2, 3] and frame["auroc_msp"].between(0, 1).all()
    assert result.metrics["epoch"] == result.metrics["epochs"] == 3
    assert [e["epoch"] for e in json.loads(result.metrics["epoch_curve"])] == [1, 2, 3]


def test_per_epoch_reports_satisfy_a_searchers_metric_check(ray_local, tmp_path):
    """A searcher stage (the pipeline's search) with trainings of several epochs and no per-epoch evaluation: every
    per-epoch report carries the ranking metric (NaN before the end), so Tune's strict metric check passes and
    the searcher learns from the final values only."""
    from ray import tune

    from search_space.searcher import PredictorEvolutionSearcher

    searcher = PredictorEvolutionSearcher(metric="auroc_msp", mode="max", min_results=4, seed=0)
    space = {k: v for k, v in config(0, epochs=2).items() if k != "genotype"}
    grid = tune.Tuner(candidate_trainable, param_space={**space, "metric": "auroc_msp"},
                      tune_config=tune.TuneConfig(search_alg=searcher, num_samples=2),
                      run_config=tune.RunConfig(storage_path=str(tmp_path), verbose=0)).fit()
    assert grid.num_errors == 0
    assert all(math.isnan(r.metrics_dataframe["auroc_msp"].iloc[0]) for r in grid)
    assert sorted(len(v) for v in searcher.results.values()) == [1, 1]
    assert all(0 <= v[0] <= 1 for v in searcher.results.values())
