"""``pipelines/experiments.py``: settings, budgets and estimates; Table 4.1 and Table 4.2 at the ``ci`` preset end to
end on the local Ray (every method, every column, resumable: a rerun trains nothing and adds no MLflow run)."""
import math
import re

import pandas as pd
import pytest

from pipelines import experiments
from pipelines.experiment_settings import load_experiment, search_budget
from pipelines.settings import ConfigError

pytest.importorskip("ray")
pytest.importorskip("mlflow")

ROWS_4_1 = ["ResNet-8", "WRN-10-2", "DenseNet-BC-10", "random search", "regularized evolution",
            "predictor, CE labels", "DCSOD"]
FAST = ["--set", "dcsod.max_concurrent=2"]


def test_budget_counts_every_candidate_training():
    _, cfg = load_experiment("ci")
    assert search_budget(cfg) == 6 + 6 + 2  # warmup N + N per alg2 iteration + search M
    alg3 = {**cfg, "distill": {**cfg["distill"], "algorithm": "alg3", "q": 3, "iterations": 2}}
    assert search_budget(alg3) == 6 + 2 * 3 * 2 + 6 + 2  # q per iteration, then the pool (N + qI) retrained
    none = {**cfg, "distill": {**cfg["distill"], "iterations": 0}}
    assert search_budget(none) == 6 + 2


def test_settings_route_dcsod_keys_and_refuse_bad_input():
    exp, cfg = load_experiment("ci", ["dcsod.train.epochs=2", "seeds=[3, 4, 5]"])
    assert cfg["train"]["epochs"] == 2 and cfg["train"]["width"] == 4 and exp["seeds"] == [3, 4, 5]
    for bad, match in [(["seeds=[1, 1]"], "seeds"), (["methods=[random, oracle]"], "methods"),
                       (["dcsod.warmup.n=1"], "warmup.n"), (["dcsod.nope=1"], "dcsod: unknown key 'nope'"),
                       (["standard=[{model: resnet, args: {depth: 21}}]"], r"standard\[0\]"),
                       (["regularized_evolution.sample_size=9"], "regularized_evolution"),
                       (["pipeline=nope"], "pipeline")]:
        with pytest.raises(ConfigError, match=match) as err:
            load_experiment("ci", bad)
        assert "\n" not in str(err.value)


def test_paper_preset_prints_its_gpu_hours_first():
    exp, cfg = load_experiment("cifar10-vs-cifar100")
    line = experiments.estimate_line("table-4.1", exp, cfg)
    candidates, retrains = experiments.planned_trainings("table-4.1", exp, cfg)
    assert candidates == 4 * search_budget(cfg) and retrains == 7 * 3 * 2
    hours = 40 * (candidates + retrains * 300 / 20) / 3600
    assert re.search(rf"estimated {hours:,.0f} GPU-hours at 40 s per candidate", line), line


def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "exp"
    code = experiments.main(["table-4.2", "--preset", "ci", "--set", "table_4_2.n=6", "--output", str(out),
                             "--tracking-uri", f"sqlite:///{tmp_path}/m.db"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: table_4_2: n = 6") and "\n" not in err
    assert not out.exists()


def mlflow_runs(uri: str, experiment: str) -> pd.DataFrame:
    import mlflow

    mlflow.set_tracking_uri(uri)
    return mlflow.search_runs(experiment_names=[experiment])


def test_table_4_1_ci(ray_local, tmp_path):
    out, uri = tmp_path / "t41", f"sqlite:///{tmp_path}/mlflow.db"
    args = ["table-4.1", "--preset", "ci", *FAST, "--output", str(out), "--tracking-uri", uri]
    assert experiments.main(args) == 0
    md = (out / "table-4.1.md").read_text()
    for label in ROWS_4_1:
        row = next(line for line in md.splitlines() if line.startswith(f"| {label} |"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        msp, maha, ot, acc = cells[5:9]
        for cell in (msp, maha, ot, acc):
            assert re.fullmatch(r"\d+\.\d ± \d+\.\d", cell), (label, cell)
        assert cells[-1] == "3"
    assert "trained 14 candidates" in md and "## Reading" in md and ("seed noise" in md or "too few" in md)
    frame = pd.read_parquet(out / "table-4.1.parquet")
    assert set(frame["label"]) == set(ROWS_4_1)
    assert len(frame) == len(ROWS_4_1) * 3 * 2  # rows x seeds x (plain, outliers)
    assert frame.groupby(["label", "stage"])["seed"].apply(lambda s: sorted(s) == [0, 1, 2]).all()
    assert frame["params"].notna().all() and frame["flops"].notna().all()
    assert (frame.loc[frame["stage"] == "retrain-outliers", "aux_images"] > 0).all()
    assert (frame.loc[frame["stage"] == "retrain-plain", "aux_images"] == 0).all()
    searched = frame[frame["method"].isin(["random", "regularized-evolution", "ce-predictor", "dcsod"])]
    assert (searched["trainings"] == 14).all()
    assert (out / "table-4.1.png").stat().st_size > 1000
    for name in ("random", "regularized-evolution", "ce-predictor", "dcsod"):
        history = pd.read_parquet(out / "methods" / name / "history.parquet")
        assert (history["stage"].isin(["warmup", "distill", "search"])).sum() == 14, name

    runs = mlflow_runs(uri, "experiments-digits")
    parent = runs[runs["tags.dcsod.command"] == "table-4.1"]
    assert len(parent) == 1 and parent["params.experiment.preset"].iloc[0] == "ci"
    methods = runs[runs["tags.mlflow.parentRunId"] == parent["run_id"].iloc[0]]
    assert set(methods["tags.dcsod.method"]) == {"standard", "random", "regularized-evolution", "ce-predictor", "dcsod"}
    trials = runs[runs["tags.mlflow.parentRunId"].isin(methods["run_id"])]
    assert len(trials) == 4 * 14 + 7 * 3 * 2
    dcsod_run = methods[methods["tags.dcsod.method"] == "dcsod"].iloc[0]
    assert math.isfinite(dcsod_run["metrics.ot_mean"])

    before = len(runs)
    assert experiments.main(args) == 0  # finished: read back, nothing trained, no MLflow run added
    assert len(mlflow_runs(uri, "experiments-digits")) == before
    assert pd.read_parquet(out / "table-4.1.parquet").equals(frame)


def test_table_4_2_ci(ray_local, tmp_path):
    out, uri = tmp_path / "t42", f"sqlite:///{tmp_path}/mlflow.db"
    assert experiments.main(["table-4.2", "--preset", "ci", *FAST, "--output", str(out), "--tracking-uri", uri]) == 0
    summary = pd.read_parquet(out / "table-4.2.parquet")
    assert list(summary["label"]) == ["ID-acc", "CE-MSP", "CE-OT", "DCSOD-MSP", "DCSOD-OT"]
    assert (summary["n"] == 16).all()
    for _, r in summary.iterrows():
        for stat, low, high in (("kendall_tau", "tau_low", "tau_high"), ("pearson_rho", "rho_low", "rho_high")):
            if math.isfinite(r[stat]):
                assert r[low] <= r[stat] <= r[high] and -1 <= r[low] and r[high] <= 1
    md = (out / "table-4.2.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith(("| ID-acc", "| CE-", "| DCSOD-"))]
    interval = r"-?\d\.\d\d \[-?\d\.\d\d, -?\d\.\d\d\]|n/a"
    assert len(rows) == 5 and all(re.fullmatch(interval, row.split("|")[3].strip()) for row in rows), rows
    predictions = pd.read_parquet(out / "table-4.2-predictions.parquet")
    assert len(predictions) == 5 * 16 and predictions.groupby("label")["arch_hash"].nunique().eq(16).all()
    plain = pd.read_parquet(out / "labels" / "plain" / "history.parquet")
    outliers = pd.read_parquet(out / "labels" / "outliers" / "history.parquet")
    assert set(plain["arch_hash"]) == set(outliers["arch_hash"])  # the same architectures, labelled both ways
