"""report.md's plain-words parts (``pipelines/nas/report_text.py`` and their glue in ``pipelines/nas/report.py``): the
task, what the numbers mean, the search's verdict and the noise warnings, each on constructed inputs with the
exact sentence expected; then a fake finished run's report.md holding them in order."""
import math

import numpy as np
import pandas as pd
import pytest

from pipelines.nas.report import _meaning_lines, _warning_lines, protocol_description, protocol_summary, runner_up
from pipelines.nas.report_text import (
    auroc_standard_error,
    class_text,
    correlation_phrase,
    correlation_warning,
    metric_meaning,
    metric_standard_error,
    runner_up_warning,
    search_verdict,
    seed_noise_warnings,
    task_section,
    validation_size_warning,
    welch,
)

DIGITS = {"protocol": "digits", "num_classes": 6, "image": [1, 8], "id_train": 758, "id_val": 163, "id_test": 162,
          "aux": 360, "ood_val": 177, "ood_test": 177, "id_classes": ["0", "1", "2", "3", "4", "5"],
          "aux_classes": ["6", "7"], "ood_classes": ["8", "9"], "seed": 0}
IDS, OODS = DIGITS["id_classes"], DIGITS["ood_classes"]


# --- the task -----------------------------------------------------------------------------------------------

def test_class_text_lists_names_and_shortens_long_lists():
    assert class_text(["0", "1", "2"]) == "0, 1, 2"
    assert class_text([f"c{i}" for i in range(100)], limit=3) == "c0, c1, c2, … (100 classes)"


def test_task_section_names_id_aux_and_ood_classes_and_image_counts():
    assert task_section("digits", DIGITS, "ignored: the protocol names its classes") == [
        "## The task", "",
        "- **In-distribution (ID)**: 0, 1, 2, 3, 4, 5 (6 classes). The network learns to classify these; their "
        "images should get a high in-distribution score.",
        "- **Auxiliary outliers**: 6, 7 (2 classes, 360 images). Shown during training as examples of what is not "
        "ID (outlier exposure, distillation); never used to score a candidate.",
        "- **OOD test classes**: 8, 9 (2 classes). Never trained on; the detector should give their images a low "
        "in-distribution score.",
        "- **Images**: candidates are ranked on the validation split (163 ID, 177 OOD); the final model is scored "
        "on the test split (162 ID, 177 OOD); 758 ID training images.",
        ""]


def test_task_section_without_class_names_quotes_the_protocol_and_says_so():
    summary = {"protocol": "cifar10-vs-cifar100", "num_classes": 10, "id_train": 45000, "id_val": 5000,
               "id_test": 10000, "aux": 0, "ood_val": 5000, "ood_test": 10000, "seed": 0, "aux_path": None}
    lines = task_section("cifar10-vs-cifar100", summary, "ID CIFAR-10, OOD CIFAR-100 test.")
    assert lines[2] == ("Protocol `cifar10-vs-cifar100`, as its registry entry describes it: ID CIFAR-10, OOD "
                        "CIFAR-100 test.")
    assert lines[4] == ("- **In-distribution (ID)**: 10 classes (not named by the protocol). The network learns to "
                        "classify these; their images should get a high in-distribution score.")
    assert lines[5] == "- **Auxiliary outliers**: none: training sees ID images only."
    assert lines[6].startswith("- **OOD test classes**: the protocol's OOD data (classes not named by the protocol).")
    assert "(5,000 ID, 5,000 OOD)" in lines[7] and "45,000 ID training images" in lines[7]
    outliers = task_section("x", {**summary, "aux": 300, "aux_path": "outliers.zip"}, "d")[5]
    assert outliers.startswith("- **Auxiliary outliers**: 300 images from `outliers.zip`. Shown during training")


def test_task_section_when_the_data_cannot_be_read():
    assert task_section("cifar10-split", None, "CIFAR-10 class split.", "path: no such file") == [
        "## The task", "", "Protocol `cifar10-split`: CIFAR-10 class split.", "",
        "Its classes and image counts could not be read: path: no such file.", ""]


def test_a_new_protocol_entry_reaches_the_report_without_edits(monkeypatch):
    """A protocol registered now (not known to report.py) gets its classes and counts into "The task"."""
    from trainables.image.data import PROTOCOLS, LabelledImages, class_split

    def toy_protocol(seed: int = 0):
        """Toy shapes: ID circle and square, OOD star."""
        labels = np.repeat(np.arange(4), 20)
        source = LabelledImages(np.zeros((80, 1, 4, 4), np.uint8), labels, ("circle", "square", "star", "blob"))
        return class_split(source, "toy", ["circle", "square"], ["blob"], ["star"], seed=seed)

    monkeypatch.setitem(PROTOCOLS, "toy", toy_protocol)
    summary, error = protocol_summary({"protocol": "toy", "protocol_options": {}})
    assert error is None and protocol_description("toy") == "Toy shapes: ID circle and square, OOD star."
    text = "\n".join(task_section("toy", summary, protocol_description("toy")))
    assert "- **In-distribution (ID)**: circle, square (2 classes)." in text
    assert "- **Auxiliary outliers**: blob (1 class, 20 images)." in text
    assert "- **OOD test classes**: star (1 class)." in text


def test_protocol_summary_reports_unreadable_data_as_one_line():
    summary, error = protocol_summary({"protocol": "imagefolder-split", "protocol_options": {
        "path": "/nonexistent/x.zip", "id_classes": ["a"], "ood_classes": ["b"]}})
    assert summary is None and "no such file" in error and "\n" not in error


# --- standard errors ----------------------------------------------------------------------------------------

def test_auroc_standard_error_is_hanley_mcneil():
    assert auroc_standard_error(0.5, 1, 1) == pytest.approx(0.5)  # one pair: sqrt(A(1-A))
    assert auroc_standard_error(0.8, 250, 250) == pytest.approx(0.019802, abs=1e-6)
    with pytest.raises(ValueError, match="n_id, n_ood"):
        auroc_standard_error(0.8, 0, 10)


def test_auroc_standard_error_matches_simulation_under_its_assumption():
    """Hanley–McNeil assumes exponential score distributions; ID scores ~ Exp(rate λ) against OOD ~ Exp(1) have
    AUROC 1/(1+λ): the sd of 4,000 simulated AUROCs on 40 + 60 images is within 10 % of the formula."""
    rng = np.random.default_rng(0)
    lam, n_id, n_ood = 0.25, 40, 60  # AUROC 0.8
    ids = rng.exponential(1 / lam, (4000, n_id))
    oods = rng.exponential(1.0, (4000, n_ood))
    aurocs = (ids[:, :, None] > oods[:, None, :]).mean(axis=(1, 2))
    assert aurocs.mean() == pytest.approx(0.8, abs=0.005)
    assert aurocs.std() == pytest.approx(auroc_standard_error(0.8, n_id, n_ood), rel=0.1)


def test_metric_standard_error_per_kind():
    assert metric_standard_error("auroc_energy", 0.8, 250, 250) == pytest.approx(0.019802, abs=1e-6)
    assert metric_standard_error("id_acc", 0.9, 100, 1) == pytest.approx(0.03)
    assert metric_standard_error("fpr95_msp", 0.5, 1, 400) == pytest.approx(0.025)
    assert metric_standard_error("openood_fpr95_msp", 0.5, 100, 1) == pytest.approx(0.05)
    assert metric_standard_error("aupr_in_msp", 0.8, 100, 100) is None


# --- what the numbers mean ----------------------------------------------------------------------------------

def test_metric_meaning_auroc_in_the_runs_terms():
    assert metric_meaning("auroc_msp", 0.834, IDS, OODS, (162, 177)) == (
        "`auroc_msp` = 0.834 (AUROC of the `msp` score): a randomly chosen test image of an ID class "
        "(0, 1, 2, 3, 4, 5) gets a higher in-distribution score than a randomly chosen test image of an OOD class "
        "(8, 9) 83 % of the time; 0.5 is chance, 1 a perfect separation (standard error about 0.022 on 162 ID and "
        "177 OOD images).")
    assert metric_meaning("auroc_energy", 0.5) == (
        "`auroc_energy` = 0.500 (AUROC of the `energy` score): a randomly chosen ID test image gets a higher "
        "in-distribution score than a randomly chosen OOD test image 50 % of the time; 0.5 is chance, 1 a perfect "
        "separation.")


def test_metric_meaning_fpr95_keeps_95_percent_of_id():
    assert metric_meaning("fpr95_msp", 0.42, IDS, OODS, (162, 177)) == (
        "`fpr95_msp` = 0.420 (FPR95 of the `msp` score): with the threshold set so that 95 % of the ID test images "
        "(0, 1, 2, 3, 4, 5) are accepted as in-distribution, 42 % of the OOD test images (8, 9) are accepted too; "
        "lower is better, 0 is perfect and a score no better than chance gives 0.95 (standard error about 0.037 "
        "on 177 OOD images).")
    assert "95 % of the OOD validation images (8, 9) are flagged as OOD, 30 % of the ID validation images" in \
        metric_meaning("openood_fpr95_knn", 0.3, IDS, OODS, split="validation")


def test_metric_meaning_id_accuracy_and_aupr():
    assert metric_meaning("id_acc", 0.97, IDS, OODS, (162, 177)) == (
        "`id_acc` = 0.970: 97 % of the ID test images (0, 1, 2, 3, 4, 5) get their correct class; chance is "
        "1/6 = 0.17 (standard error about 0.013 on 162 ID images).")
    assert metric_meaning("aupr_out_maha", 0.7, IDS, OODS, (100, 300)) == (
        "`aupr_out_maha` = 0.700 (average precision of the `maha` score): how well ranking the pooled ID and OOD "
        "test images by the `maha` score puts the OOD test images (8, 9) before the ID ones; 1 is perfect, a "
        "random ranking gives their share of the pool, 0.75.")


def test_meaning_lines_explain_the_metric_its_auroc_fpr95_and_id_acc():
    measured = {"aupr_in_msp": 0.9, "auroc_msp": 0.8, "fpr95_msp": 0.5, "auroc_energy": 0.7, "id_acc": 0.95,
                "epochs": 2, "fpr95_energy": math.nan}
    lines = _meaning_lines("aupr_in_msp", measured, DIGITS)
    assert lines[0] == "## What the numbers mean"
    assert [line.split(" = ")[0] for line in lines if line.startswith("- ")] == \
        ["- `aupr_in_msp`", "- `auroc_msp`", "- `fpr95_msp`", "- `id_acc`"]
    assert _meaning_lines("auroc_msp", {"epochs": 2}, DIGITS) == []


# --- the search against what came before it -----------------------------------------------------------------

def test_search_verdict_yes_with_both_numbers():
    assert search_verdict("auroc_msp", [0.8, 0.85, math.nan], [0.9, 0.84]) == (
        "Yes: the best of the search's 2 trained proposals measured auroc_msp 0.9000 (validation split), above "
        "the best of the 2 warmup or distillation trainings before it, 0.8500 (+0.0500).")


def test_search_verdict_no_and_within_noise():
    assert search_verdict("auroc_msp", [0.85], [0.84]) == (
        "No: the best of the search's 1 trained proposal measured auroc_msp 0.8400 (validation split), below the "
        "best of the 1 warmup or distillation training before it, 0.8500 (-0.0100).")
    assert search_verdict("auroc_msp", [0.85], [0.86], noise=0.04).endswith(
        "(+0.0100); a difference smaller than 0.0400 (twice the standard error of one validation measurement), so "
        "it may be luck of the split.")
    assert search_verdict("auroc_msp", [0.85], [0.85], noise=0.04).startswith("No: ") and \
        "equal to the best" in search_verdict("auroc_msp", [0.85], [0.85])


def test_search_verdict_without_search_or_earlier_measurements():
    assert search_verdict("auroc_msp", [0.85], [math.nan]) == (
        "No: the search measured no architecture with a finite auroc_msp (search.trials = 0, or every proposal "
        "failed), so it did not beat the best of the 1 warmup or distillation training before it, 0.8500.")
    assert search_verdict("id_acc", [], [0.9]) == (
        "No warmup or distillation training finished with a finite id_acc, so there is nothing to compare the "
        "search's best (0.9000) with.")


# --- noise warnings -----------------------------------------------------------------------------------------

def test_validation_size_warning_states_size_and_standard_error():
    assert validation_size_warning("auroc_msp", 0.9, 250, 250) is None
    assert validation_size_warning("auroc_msp", 0.9, 163, 177) == (
        "Small validation split: candidates are ranked on 163 ID and 177 OOD images (340 < 500); at the champion's "
        "validation auroc_msp of 0.900 the standard error of one measurement on that many images is about 0.018, "
        "so candidates closer than about 0.035 (2 SE) may be ranked by luck of the split. (Below 500 images, half "
        "ID and half OOD, an AUROC of 0.8 has a Hanley–McNeil standard error above 0.020.)")
    assert "aupr_in_msp has no simple standard error, but an AUROC of 0.8 on that many images has one of about " \
           "0.024" in validation_size_warning("aupr_in_msp", 0.9, 163, 177)


def compare(champion, other, seeds=(0, 1, 2)):
    return {"metric": "auroc_msp", "seeds": list(seeds),
            "rows": [{"role": "champion", "values": {"auroc_msp": champion}},
                     {"role": "standard architecture ResNet-8", "values": {"auroc_msp": other}}]}


def test_welch_matches_scipy_and_needs_two_seeds():
    from scipy.stats import ttest_ind

    diff, p = welch([0.9, 0.92, 0.91], [0.85, 0.9, math.nan, 0.8])
    assert diff == pytest.approx(0.91 - 0.85)
    assert p == pytest.approx(ttest_ind([0.9, 0.92, 0.91], [0.85, 0.9, 0.8], equal_var=False).pvalue)
    assert welch([0.9], [0.8, 0.7]) is None


def test_seed_noise_warning_when_the_champions_lead_is_within_seed_noise():
    assert seed_noise_warnings(compare([0.9, 0.92], [0.89, 0.9], seeds=[0, 1])) == [
        "The champion's lead over the standard architecture ResNet-8 (+0.0150 mean test auroc_msp over seeds "
        "[0, 1]) is within seed noise: the seed-to-seed sd is 0.0141 for the champion and 0.0071 for the standard "
        "architecture ResNet-8 (Welch p = 0.35)."]
    assert seed_noise_warnings(compare([0.9, 0.91, 0.9], [0.8, 0.81, 0.8])) == []  # beyond seed noise
    assert seed_noise_warnings(compare([0.8, 0.82], [0.9, 0.91])) == []  # no lead to warn about
    assert seed_noise_warnings(compare([0.9], [0.8], seeds=[0])) == [
        "The champion's lead over the standard architecture ResNet-8 (+0.1000 test auroc_msp) rests on a single "
        "seed: seed noise is unknown."]


def test_runner_up_warning_names_the_noise_the_gap_is_below():
    assert runner_up_warning("auroc_msp", 0.9, ("abc", 0.895), seed_sd=0.01, se=0.003) == (
        "The champion's validation auroc_msp (0.9000) leads the runner-up `abc` (0.8950) by only 0.0050, less than "
        "the seed-to-seed sd of the champion's retrains at the final budget (0.0100): which of the two is better "
        "is not settled by this run.")
    assert "(0.0100) and the standard error of one validation measurement (0.0170):" in \
        runner_up_warning("auroc_msp", 0.9, ("abc", 0.895), seed_sd=0.01, se=0.017)
    assert runner_up_warning("auroc_msp", 0.9, ("abc", 0.85), seed_sd=0.01, se=0.017) is None
    assert runner_up_warning("auroc_msp", 0.9, ("abc", 0.95), seed_sd=0.1) is None  # the champion is behind
    assert runner_up_warning("auroc_msp", 0.9, ("abc", 0.899)) is None  # no noise estimate


def test_runner_up_is_the_best_other_candidate_of_the_last_iteration_and_search():
    history = pd.DataFrame({
        "arch_hash": ["w1", "a", "b", "a", "b", "c", "s1", "s2"],
        "stage": ["warmup", "distill", "distill", "distill", "distill", "distill", "search", "search"],
        "iteration": [0, 1, 1, 2, 2, 2, 0, 0],
        "auroc_msp": [0.99, 0.98, 0.7, 0.9, 0.8, math.nan, 0.85, 0.8]})
    assert runner_up(history, "auroc_msp", "a") == ("s1", 0.85)  # not warmup's 0.99 nor iteration 1's 0.98
    assert runner_up(history, "auroc_msp", "s1") == ("a", 0.9)
    assert runner_up(history[history.stage == "warmup"], "auroc_msp", "w1") is None


def test_correlation_phrase_marks_fewer_than_five_points_as_not_a_result():
    q = {"n": 4, "kendall_tau": 1.0, "tau_low": 1.0, "tau_high": 1.0}
    assert correlation_phrase(q) == "τ 1.00 (95% CI 1.00 to 1.00, n=4) — not a result: fewer than 5 architectures"
    q5 = {"n": 5, "kendall_tau": 0.6, "tau_low": 0.2, "tau_high": 1.0}
    assert correlation_phrase(q5) == "τ 0.60 (95% CI 0.20 to 1.00, n=5)"
    assert correlation_warning("The predictor's Kendall τ on the search proposals", q5) is None
    assert correlation_warning("The predictor's Kendall τ on the search proposals", {"n": 2}) == (
        "The predictor's Kendall τ on the search proposals rests on n=2: not a result (fewer than 5 architectures; "
        "with so few points a rank correlation takes a few coarse values and even ±1 arises by chance).")


def test_warning_lines_collect_every_warning_or_say_none():
    history = pd.DataFrame({"arch_hash": ["a", "b"], "stage": ["distill", "distill"], "iteration": [1, 1],
                            "auroc_msp": [0.9, 0.899]})
    best = {"arch_hash": "a", "measured_search": {"auroc_msp": 0.9},
            "compare": compare([0.9, 0.92], [0.89, 0.9], seeds=[0, 1])}
    lines = _warning_lines("auroc_msp", best, history, DIGITS, {"validation": {"n": 2}, "search": {"n": 3}})
    bullets = [line for line in lines if line.startswith("- ")]
    assert lines[0] == "## Warnings" and len(bullets) == 5
    assert [b.split()[1] for b in bullets] == ["Small", "The", "The", "The", "The"]
    assert "runner-up `b`" in bullets[2] and "held-out" in bullets[3] and "search proposals" in bullets[4]
    large = {**DIGITS, "id_val": 5000, "ood_val": 5000}
    quiet = _warning_lines("auroc_msp", {"arch_hash": "a", "measured_search": {"auroc_msp": 0.95}}, history, large,
                           {"validation": {"n": 9}})
    assert quiet == ["## Warnings", "", "- None.", ""]


# --- the whole report ---------------------------------------------------------------------------------------

def test_report_md_speaks_plainly_in_order(monkeypatch, tmp_path):
    from test_drawing import finished_fake_run

    from pipelines.nas.report import write_report

    flow, best = finished_fake_run(monkeypatch, tmp_path)
    write_report(flow.run, flow.cfg, best)
    lines = (flow.run / "report.md").read_text().splitlines()
    order = ["## The task", "## Champion", "### The champion's cells", "## What the numbers mean",
             "## The search against the architectures before it", "## Warnings", "## Did the search help?",
             "## Predictor"]
    assert [lines.index(h) for h in order] == sorted(lines.index(h) for h in order)
    text = "\n".join(lines)
    assert "- **In-distribution (ID)**: 0, 1, 2, 3, 4, 5 (6 classes)." in text
    assert "- `auroc_msp` = 0.800 (AUROC of the `msp` score): a randomly chosen test image of an ID class" in text
    assert "- Small validation split: candidates are ranked on 163 ID and 177 OOD images" in text
    assert "rests on n=2: not a result" in text and "— not a result: fewer than 5 architectures" in text


def test_search_trajectory_line_is_the_verdicts_best_before_the_search(monkeypatch, tmp_path):
    """The plot's "best before the search" is the number the verdict compares with: the best warmup or distill
    value (here a warmup architecture's, which beats every distill one)."""
    from test_drawing import finished_fake_run

    import pipelines.nas.report as report
    from pipelines.nas.tracking import HistoryStore

    flow, best = finished_fake_run(monkeypatch, tmp_path)
    history = HistoryStore(flow.run / "history.parquet")
    top = history.read()
    top = top[top.stage == "warmup"].iloc[0]
    history.append({**top.to_dict(), "arch_hash": "f" * 16, "auroc_msp": 0.995, "mlflow_run_id": ""})
    history.append({**top.to_dict(), "arch_hash": "e" * 16, "stage": "distill", "iteration": 1, "auroc_msp": 0.5,
                    "mlflow_run_id": ""})  # the last row before the search is a distill one
    saved = {}
    monkeypatch.setattr(report, "_savefig", lambda fig, path: saved.setdefault(path.name, fig))
    report.write_report(flow.run, flow.cfg, best)
    (line,) = [ln for ln in saved["search_trajectory.png"].axes[0].get_lines()
               if ln.get_label() == "best before the search"]
    assert list(line.get_ydata()) == [0.995, 0.995]
    assert "before it, 0.9950." in (flow.run / "report.md").read_text()


def test_protocol_summary_is_read_from_the_final_model_info_without_loading_the_data(tmp_path):
    """report.md takes the protocol summary the final retrain's worker stored (``final/model_info.pt``), so the
    driver never loads the data set for it; here the data path no longer exists."""
    import torch

    from pipelines.common.rundir import RunDir

    run = RunDir.open(tmp_path / "run", {"x": 1})
    (run.path / "final").mkdir()
    stored = {"protocol": "cifar10-split", "id_classes": ["airplane"], "ood_classes": ["horse"], "id_val": 10}
    torch.save({"mean": torch.zeros(3), "summary": stored}, run.path / "final" / "model_info.pt")
    cfg = {"protocol": "cifar10-split", "protocol_options": {"path": str(tmp_path / "gone.zip")}}
    assert protocol_summary(cfg, run) == (stored, None)
    summary, error = protocol_summary(cfg)
    assert summary is None and "gone.zip" in error


def test_failed_comparison_trainings_are_named_in_the_report_and_the_consoles_last_line():
    """A compare training that failed (a crashed worker leaves no metrics, only its config's arch and seed)
    leaves its seed out of the row's values, is listed with its reason, and the table says "failed"."""
    from pipelines.nas.report import _compare_lines
    from pipelines.nas.report_text import incomplete_comparison_line
    from pipelines.nas.workflow import comparison_row

    records = [{"arch_hash": "champ", "seed": 0, "checkpoint": "c0", "auroc_msp": 0.9, "id_acc": 0.8, "params": 7},
               {"arch_hash": "champ", "seed": 1, "checkpoint": "c1", "auroc_msp": 0.92, "id_acc": 0.82},
               {"arch_hash": "resnet-depth8", "seed": 0, "checkpoint": "r0", "auroc_msp": 0.88, "id_acc": 0.9},
               {"arch_hash": "resnet-depth8", "seed": 1, "checkpoint": None, "auroc_msp": None,
                "error": "The actor died unexpectedly (exit code 139)"}]
    rows = [comparison_row("champion", "champ", records, [0, 1], "auroc_msp"),
            comparison_row("standard architecture ResNet-8", "resnet-depth8", records, [0, 1], "auroc_msp")]
    assert rows[0]["missing"] == [] and rows[0]["params"] == 7 and rows[0]["values"]["id_acc"] == [0.8, 0.82]
    assert rows[1]["seeds"] == [0] and rows[1]["values"]["auroc_msp"] == [0.88]
    assert rows[1]["missing"] == [{"seed": 1, "error": "The actor died unexpectedly (exit code 139)"}]
    assert comparison_row("median", "gone", records, [0, 1], "auroc_msp")["missing"] == [
        {"seed": 0, "error": "no result"}, {"seed": 1, "error": "no result"}]

    compare = {"seeds": [0, 1], "metric": "auroc_msp", "rows": rows}
    lines = _compare_lines({"measured_test": {"epochs": 2}, "compare": compare})
    assert "| `resnet-depth8` | standard architecture ResNet-8 | – | 0.8800, failed | 0.880 | 0.900 |" in lines
    assert "**The comparison is incomplete:** 1 of 4 trainings failed; the table lacks them (each is a FAILED " \
           "MLflow run of stage `compare` with its reason):" in lines
    assert "- the standard architecture ResNet-8 (`resnet-depth8`), seed 1: The actor died unexpectedly (exit " \
           "code 139)" in lines
    assert incomplete_comparison_line(compare) == (
        "warning: the comparison is incomplete: 1 of 4 trainings failed (the standard architecture ResNet-8 "
        "(`resnet-depth8`), seed 1: The actor died unexpectedly (exit code 139)); report.md names the missing rows")
    complete = {**compare, "rows": rows[:1]}
    assert incomplete_comparison_line(complete) is None and incomplete_comparison_line(None) is None
    assert not any("incomplete" in line for line in _compare_lines({"measured_test": {}, "compare": complete}))
