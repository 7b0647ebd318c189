"""``pipelines/experiments.py``: settings, budgets and estimates; every command at the ``ci`` preset end to end on the
local Ray (Table 4.1: every method, every column, resumable after kill -9; the studies with reduced --set lists)."""
import json
import math
import re

import numpy as np
import pandas as pd
import pytest

from pipelines import experiments
from pipelines.common.settings import ConfigError
from pipelines.thesis.settings import load_experiment, search_budget

pytest.importorskip("ray")
pytest.importorskip("mlflow")

ROWS_4_1 = ["ResNet-8", "random search", "regularized evolution", "predictor, CE labels", "DCSOD"]
#: Table 4.1 in the test: one standard row (every standard model is built and counted in test_standard_models.py)
#: and 2 seeds, which keeps this end-to-end test near 2 minutes.
SETS_4_1 = ["--set", "standard=[{model: resnet, args: {depth: 8}}]", "--set", "seeds=[0, 1]"]
#: One trial at a time: each Tune stage then starts one worker process instead of two (imports of torch and Ray Tune,
#: about 4 CPU-s each, are most of a ci stage's cost); the wall time is the same, the other core runs other tests.
FAST = ["--set", "dcsod.max_concurrent=1"]


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


def test_plan_counts_teachers_and_gives_the_seconds_source(capsys):
    """The cost estimate (pipelines/thesis/cost.py): every training of the ci end-to-end run below, the teachers'
    forward passes, the preset's batch size, and where the seconds per candidate come from."""
    from pipelines.thesis.cost import FORWARD_SHARE, expects_outliers, plan_lines, planned_trainings

    exp, cfg = load_experiment("ci", ["standard=[{model: resnet, args: {depth: 8}}]", "seeds=[0, 1]"])
    outliers, _ = expects_outliers(cfg)  # digits has its own outlier classes
    groups = planned_trainings("table-4.1", exp, cfg, outliers)
    assert outliers and sum(g.count for g in groups if not g.retrain) == 4 * 14 + 12  # as test_table_4_1_ci's trials
    assert sum(g.count for g in groups if g.retrain) == len(ROWS_4_1) * 2 * 2
    assert {g.teachers for g in groups if g.what.endswith(("distillation", "search", "retrains"))
            and g.what.startswith("DCSOD")} == {2 + 1}  # ci: top 2 + random 1, online
    no_outliers = planned_trainings("table-4.1", exp, cfg, outliers=False)
    assert sum(g.count for g in no_outliers) == 4 * 14 + len(ROWS_4_1) * 2
    noise = planned_trainings("fig-4.3", *load_experiment("ci"))
    assert sum(g.count for g in noise) == 6 + 4 * 3 * 4  # the teachers' warmup + 4 architectures x 3 seeds x 4

    exp, cfg = load_experiment("cifar10-vs-cifar100")
    lines = plan_lines("table-4.1", exp, cfg)
    text = "\n".join(lines)
    assert "counted without auxiliary outliers (dcsod.protocol_options.aux_path is null)" in lines[0]
    assert "seconds per candidate: 160 s on one H100 at batch 128, not measured, assumed: " in text  # 40 s at 512
    assert "40 s at batch 512, scaled to batch 128 by SGD steps per epoch, × 512/128" in text
    assert "11 teachers costs 4.67 times" in text  # top 10 + random 1, each forward 1/3 of a step
    size, teach = 300 / 20 / 0.5, 1 + 11 * FORWARD_SHARE
    worth = 3 * 8100 + 2000 + 6100 * teach + 18 * size + 3 * size * teach
    assert f"{worth:,.0f} candidates' worth × 160 s = {worth * 160 / 3600:,.0f} hours on one H100" in text, text

    measured = ("seconds_per_candidate={seconds: 30, batch_size: 128, device: one H200, assumed: null, "
                "measured: {file: benchmarks/RESULTS.md, date: '2026-12-10'}}")
    exp, cfg = load_experiment("cifar10-vs-cifar100", [measured, "dcsod.distill.teacher_mode=cached"])
    text = "\n".join(plan_lines("table-4.1", exp, cfg))
    assert "30 s on one H200 at batch 128, measured here: benchmarks/RESULTS.md, one H200, 2026-12-10" in text
    assert "scaled" not in text and "teachers cached: the ensemble runs once per worker" in text
    for bad, match in [(measured.replace("RESULTS.md", "NOPE.md"), "measured.file"),
                       (measured.replace("assumed: null", "assumed: a guess"), "not both"),
                       ("seconds_per_candidate=40", "expected null or a mapping")]:
        with pytest.raises(ConfigError, match=match):
            load_experiment("cifar10-vs-cifar100", [bad])
    assert "no time estimate" in plan_lines("fig-4.3", *load_experiment("ci"))[-1]

    assert experiments.main(["table-4.1", "--preset", "cifar10-vs-cifar100", "--plan"]) == 0  # prints, runs nothing
    assert "not measured, assumed" in capsys.readouterr().out


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
    args = ["table-4.1", "--preset", "ci", *FAST, *SETS_4_1, "--output", str(out), "--tracking-uri", uri]
    assert experiments.main(args) == 0
    md = (out / "table-4.1.md").read_text()
    for label in ROWS_4_1:
        row = next(line for line in md.splitlines() if line.startswith(f"| {label} |"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        msp, maha, ot, acc = cells[5:9]
        for cell in (msp, maha, ot, acc):
            assert re.fullmatch(r"\d+\.\d ± \d+\.\d", cell), (label, cell)
        assert cells[-1] == "2"
    assert "trained 14 candidates" in md and "## Reading" in md and ("seed noise" in md or "too few" in md)
    frame = pd.read_parquet(out / "table-4.1.parquet")
    assert set(frame["label"]) == set(ROWS_4_1)
    assert len(frame) == len(ROWS_4_1) * 2 * 2  # rows x seeds x (plain, outliers)
    assert frame.groupby(["label", "stage"])["seed"].apply(lambda s: sorted(s) == [0, 1]).all()
    assert frame["params"].notna().all() and frame["flops"].notna().all()
    assert (frame.loc[frame["stage"] == "retrain-outliers", "aux_images"] > 0).all()
    assert (frame.loc[frame["stage"] == "retrain-plain", "aux_images"] == 0).all()
    # lineage: no auxiliary outlier reached a MSP/Maha value, not even through DCSOD's teachers
    plain = frame.loc[frame["stage"] == "retrain-plain", "lineage"]
    assert set(plain) == {"id=digits/train+val;outliers=none;eval=test"}, set(plain)
    dcsod = frame[(frame["method"] == "dcsod") & (frame["stage"] == "retrain-outliers")]
    assert set(dcsod["lineage"]) == {"id=digits/train+val;outliers=direct+teachers;eval=test"}
    no_outliers = pd.read_parquet(out / "methods" / "dcsod-no-outliers" / "history.parquet")
    assert set(no_outliers["lineage"]) == {"id=digits/train[50%];outliers=none;eval=val"}  # the clean teachers
    ce_labels = pd.read_parquet(out / "methods" / "ce-predictor" / "history.parquet")
    assert set(ce_labels.loc[ce_labels["stage"] == "warmup", "lineage"]) == {
        "id=digits/train[50%];outliers=none;eval=val"}
    searched = frame[frame["method"].isin(["random", "regularized-evolution", "ce-predictor", "dcsod"])]
    assert (searched["trainings"] == 14).all()
    assert (out / "table-4.1.png").stat().st_size > 1000
    for name in ("random", "regularized-evolution", "ce-predictor", "dcsod"):
        history = pd.read_parquet(out / "methods" / name / "history.parquet")
        assert (history["stage"].isin(["warmup", "distill", "search"])).sum() == 14, name

    runs = mlflow_runs(uri, "experiments-digits")
    parent = runs[(runs["tags.dcsod.command"] == "table-4.1") & runs["tags.mlflow.parentRunId"].isna()]
    assert len(parent) == 1 and parent["params.experiment.preset"].iloc[0] == "ci"
    assert parent["params.version.torch"].iloc[0].startswith("2.")
    methods = runs[runs["tags.mlflow.parentRunId"] == parent["run_id"].iloc[0]]
    assert set(methods["tags.dcsod.method"]) == {"standard", "random", "regularized-evolution", "ce-predictor", "dcsod",
                                                 "dcsod-no-outliers"}
    stages = runs[runs["tags.mlflow.parentRunId"].isin(methods["run_id"])]  # command > method > stage > trial
    assert stages["tags.arch_hash"].isna().all() and stages["tags.dcsod.stage"].notna().all()
    trials = runs[runs["tags.arch_hash"].notna()]
    assert len(trials) == 4 * 14 + 12 + len(ROWS_4_1) * 2 * 2  # 12: DCSOD's warmup and distillation without outliers
    assert trials["tags.mlflow.parentRunId"].isin(stages["run_id"]).all()
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
    assert (summary["n"] == 16).all() and (summary["repeats"] == 3).all()
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


def test_table_4_1_resumes_after_kill_9_without_training_twice(tmp_path):
    """kill -9 of the driver right after the random search finished, then the same command: the search is read
    back (its 14 rows and MLflow runs stay single), the retrains run, and every MLflow key exists once."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from servers import kill_session

    root = Path(__file__).resolve().parent.parent
    out, uri = tmp_path / "t41", f"sqlite:///{tmp_path}/mlflow.db"
    cmd = [sys.executable, str(root / "pipelines" / "experiments.py"), "table-4.1", "--preset", "ci", "--set",
           "methods=[random]", "--set", "standard=[{model: resnet, args: {depth: 8}}]", "--set", "seeds=[0, 1]", *FAST,
           "--output", str(out),
           "--tracking-uri", uri, "--no-dashboard"]
    env = {**os.environ, "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0", "OMP_NUM_THREADS": "1"}
    env.pop("RAY_ADDRESS", None)
    first = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    manifest = out / "methods" / "random" / "manifest.json"
    deadline = time.monotonic() + 600
    try:
        while "search" not in (json.loads(manifest.read_text())["stages"] if manifest.exists() else {}):
            assert first.poll() is None and time.monotonic() < deadline, "the first run ended before the kill"
            time.sleep(0.5)
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(30)
    finally:
        kill_session(first.pid)
    assert not (out / "table-4.1.md").exists()
    searched = out / "methods" / "random" / "stages" / "search.json"
    written = searched.stat().st_mtime_ns
    assert subprocess.run(cmd, env=env, capture_output=True).returncode == 0
    assert searched.stat().st_mtime_ns == written  # the finished search was read back, not run again
    frame = pd.read_parquet(out / "table-4.1.parquet")
    assert len(frame) == 2 * 2 * 2 and set(frame["label"]) == {"ResNet-8", "random search"}
    history = pd.read_parquet(out / "methods" / "random" / "history.parquet")
    assert (history["stage"] == "search").sum() == 14
    assert not history.duplicated(["arch_hash", "stage", "iteration", "seed"]).any()
    runs = mlflow_runs(uri, "experiments-digits")
    assert runs["tags.dcsod.key"].is_unique, "a rerun duplicated an MLflow run"
    assert runs["tags.arch_hash"].notna().sum() == 14 + 2 * 2 * 2  # search, retrains
    assert (runs["tags.mlflow.parentRunId"].isna()).sum() == 1  # one command run


def run_ci(command: str, tmp_path, *sets: str):
    out, uri = tmp_path / command, f"sqlite:///{tmp_path}/mlflow.db"
    args = [command, "--preset", "ci", *FAST, *[x for s in sets for x in ("--set", s)], "--output", str(out),
            "--tracking-uri", uri]
    assert experiments.main(args) == 0
    return out, args


def test_fig_4_3_noise_study_ci(ray_local, tmp_path):
    out, args = run_ci("fig-4.3", tmp_path, "noise.objectives=[oe, ce, distill]", "noise.scores=[msp, maha]",
                       "noise.architectures=3", "noise.finetune_epochs=2")
    frame = pd.read_parquet(out / "fig-4.3.parquet")
    assert len(frame) == 3 * 2 * 3 * 3  # objectives x scores x architectures x seeds
    assert frame.groupby(["objective", "score"])["arch_hash"].nunique().eq(3).all()
    assert list(dict.fromkeys(frame["objective"])) == ["ce", "oe", "distill"]  # CE first: OE fine-tunes its weights
    assert dict(frame.groupby("objective")["training"].first()) == {
        "ce": "scratch, 1 epoch", "oe": "fine-tune of ce, 2 epochs", "distill": "scratch, 1 epoch"}
    # an OE fine-tune of a CE network saw outliers directly, the CE network none
    assert set(frame.loc[frame["objective"] == "oe", "lineage"]) == {"id=digits/train[50%];outliers=direct;eval=val"}
    assert set(frame.loc[frame["objective"] == "ce", "lineage"]) == {"id=digits/train[50%];outliers=none;eval=val"}
    stages = out / "methods" / "noise" / "stages"
    tuned = json.loads((stages / "noise-oe-finetune-2ep-lr0.001.json").read_text())["records"]
    assert len(tuned) == 9 and all(r["checkpoint"] and not r["error"] for r in tuned)
    md = (out / "fig-4.3.md").read_text()
    assert "Protocol `finetune`: ce and distill trained 1 epoch from a seeded random initialisation" in md
    assert "oe fine-tuned the CE network of the same architecture and seed for 2 epochs (SGD lr 0.001" in md
    assert "| objective | score | training | sd_seed | sd_arch | ratio | seed τ [95% CI] |" in md
    for objective in ("ce", "oe", "distill"):
        for score in ("msp", "maha", "id_acc"):
            row = next(line for line in md.splitlines() if line.startswith(f"| {objective} | {score} |"))
            sd_seed, sd_arch, ratio = (float(c) for c in row.strip("|").split("|")[3:6])
            assert sd_seed >= 0 and sd_arch >= 0 and ratio >= 0
    assert (out / "fig-4.3.png").stat().st_size > 1000
    teachers = stages / "teachers-noise.json"
    assert teachers.exists()  # distillation's teachers: chosen from the warmup


def test_noise_statistics_separate_seed_and_architecture_spread():
    from pipelines.thesis.noise_study import noise_statistics

    rng = np.random.default_rng(0)
    arch = np.linspace(0.6, 0.9, 12)[:, None]
    clean = noise_statistics(arch + rng.normal(0, 0.005, (12, 5)), n_boot=100)
    noisy = noise_statistics(arch + rng.normal(0, 0.2, (12, 5)), n_boot=100)
    assert clean["ratio"] < 0.1 and clean["seed_tau"] > 0.8 and clean["tau_low"] > 0.5
    assert noisy["ratio"] > 1 and noisy["seed_tau"] < clean["seed_tau"]
    assert clean["sd_seed"] == pytest.approx(0.005, rel=0.35) and clean["sd_arch"] == pytest.approx(arch.std(ddof=1),
                                                                                                   rel=0.05)


def test_table_4_3_ablation_ci(ray_local, tmp_path):
    out, _ = run_ci("table-4.3", tmp_path, "ablation.rows=[[0, 0, null], [0.5, 0.5, 0.2]]", "seeds=[0, 1]")
    md = (out / "table-4.3.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| 0")]
    assert [r.split("|")[1:4] for r in rows] == [[" 0 ", " 0 ", " – "], [" 0.5 ", " 0.5 ", " 0.2 "]]
    assert all("(n=" in r and "±" in r for r in rows)
    frame = pd.read_parquet(out / "table-4.3.parquet")
    assert len(frame) == 2 * 2 and set(frame["seed"]) == {0, 1}
    # λ = 0 is DCSOD without outliers: a CE warmup of its own, no outlier anywhere; λ > 0 warms up with OE
    assert set(frame.loc[frame["lam"] == 0, "lineage"]) == {"id=digits/train+val;outliers=none;eval=test"}
    assert set(frame.loc[frame["lam"] > 0, "lineage"]) == {"id=digits/train+val;outliers=direct+teachers;eval=test"}
    first = pd.read_parquet(out / "methods" / "ablation-lam0-alpha0-beta-" / "history.parquet")
    assert set(first["lineage"].str.split(";").str[1]) == {"outliers=none"}
    second = out / "methods" / "ablation-lam0.5-alpha0.5-beta0.2"
    assert "shared_from" not in json.loads((second / "manifest.json").read_text())["stages"]["warmup"]
    distill = json.loads((second / "stages" / "distill-1.json").read_text())["records"]
    assert distill and all(r["stage"] == "distill" for r in distill)


def test_fig_4_4_tradeoff_ci(ray_local, tmp_path):
    out, _ = run_ci("fig-4.4", tmp_path, "seeds=[0, 1]")
    md = (out / "fig-4.4.md").read_text()
    combos = [tuple(int(c) for c in line.strip("|").split("|")[:2]) for line in md.splitlines()
              if re.match(r"\| \d+ \| \d+ \|", line)]
    assert combos == [(12, 0), (6, 1), (6, 0)]  # N(1+I) = 12 for I = 0, 1; then N = 6 with I = 0
    assert (out / "fig-4.4.png").stat().st_size > 1000 and len(pd.read_parquet(out / "fig-4.4.parquet")) == 3 * 2


def test_fig_4_5_and_fig_4_6_ci(ray_local, tmp_path):
    out, args = run_ci("fig-4.5", tmp_path, "landscape={steps: 5, span: 1.0, images: 128}")
    frame = pd.read_parquet(out / "fig-4.5.parquet")
    assert list(frame["training"]) == ["cross-entropy", "distillation"]
    assert list(frame["loss"]) == ["ce", "distill"]  # landscape.loss: own, the thesis's comparison
    assert np.isfinite(frame[["sharpness", "center_loss"]].to_numpy()).all()
    surface = json.loads((out / "landscape-distillation.json").read_text())
    assert np.array(surface["surface"]).shape == (5, 5) and surface["loss"] == "distill"
    md = (out / "fig-4.5.md").read_text()
    assert "each network's own training loss (`landscape.loss: own`" in md
    assert "| training | loss measured | centre loss |" in md
    assert "| cross-entropy | cross-entropy |" in md and "| distillation | outlier distillation (eq. 4.11) |" in md
    assert "The panels measure different losses" in md
    before = {name: (out / f"landscape-{name}.json").stat().st_mtime_ns for name in ("cross-entropy", "distillation")}
    assert experiments.main(args) == 0
    assert {name: (out / f"landscape-{name}.json").stat().st_mtime_ns for name in before} == before
    out6, _ = run_ci("fig-4.6", tmp_path)
    md = (out6 / "fig-4.6.md").read_text()
    assert "![champion cells](fig-4.6.png)" in md and (out6 / "fig-4.6.png").stat().st_size > 1000
    genotype = json.loads(md.split("```json\n")[1].split("\n```")[0])
    from search_space import Genotype

    assert Genotype.from_dict(genotype).arch_hash in md
