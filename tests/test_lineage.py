"""Data lineage (issue 28): what data reached a training, recorded with every result, and tables that refuse a
value of the wrong lineage with one line naming the column."""
import math

import pandas as pd
import pytest

from trainables.image.lineage import Lineage, LineageError, Requirement, id_part, teachers_outliers, training_lineage

OE_TEACHER = "id=digits/train[50%];outliers=direct;eval=val"
CE_TEACHER = "id=digits/train[50%];outliers=none;eval=val"


def test_a_lineage_reads_back_from_its_string_and_refuses_anything_else():
    lineage = Lineage("digits/train[50%]", "teachers", "val")
    assert str(lineage) == "id=digits/train[50%];outliers=teachers;eval=val"
    assert Lineage.parse(str(lineage)) == lineage and lineage.saw_outliers is True
    assert Lineage.parse(CE_TEACHER).saw_outliers is False
    assert Lineage.parse("id=x;outliers=unknown;eval=test").saw_outliers is None
    for bad in ("", "id=x;eval=val", "id=x;outliers=some;eval=val"):
        with pytest.raises(ValueError):
            Lineage.parse(bad)


def test_id_part_names_the_images_a_training_learned_from():
    assert id_part("digits", 1.0, False) == "digits/train"
    assert id_part("digits", 0.5, False) == "digits/train[50%]"
    assert id_part("cifar10-split", 1.0, True) == "cifar10-split/train+val"


def test_outliers_reach_a_training_directly_or_through_any_teacher():
    assert teachers_outliers([]) == "none"
    assert teachers_outliers([CE_TEACHER, CE_TEACHER]) == "none"
    assert teachers_outliers([CE_TEACHER, OE_TEACHER]) == "teachers"
    assert teachers_outliers([CE_TEACHER, ""]) == "unknown"  # a teacher recorded before lineage existed
    assert teachers_outliers(["", OE_TEACHER]) == "teachers"
    assert training_lineage("digits", 1.0, True, "test", False, [CE_TEACHER]).outliers == "none"
    assert training_lineage("digits", 1.0, True, "test", False, [OE_TEACHER]).outliers == "teachers"
    assert training_lineage("digits", 1.0, True, "test", True, [OE_TEACHER]).outliers == "direct+teachers"
    assert training_lineage("digits", 1.0, True, "test", True, None).outliers == "direct"
    # a teacher whose own teachers saw outliers passes them on
    second = str(training_lineage("digits", 0.5, False, "val", False, [OE_TEACHER]))
    assert training_lineage("digits", 1.0, False, "test", False, [second]).outliers == "teachers"


@pytest.mark.parametrize("objective, args, bundle, expected", [
    ("ce", {}, None, "none"),
    ("oe", {}, None, "direct"),
    ("oe", {"lam": 0.0}, None, "direct"),  # the outlier batch still shares the forward pass (batch norm)
    ("distill", {"lam": 0.0}, [OE_TEACHER], "teachers"),  # the leak of issue 28: λ = 0 from OE teachers
    ("distill", {"lam": 0.0}, [CE_TEACHER], "none"),
    ("distill", {"lam": 0.0, "alpha": 0.0}, [OE_TEACHER], "none"),  # no teacher term: the teachers are unused
    ("distill", {"lam": 0.5}, [CE_TEACHER], "direct"),
])
def test_a_trainings_lineage_follows_its_objective_and_teachers(objective, args, bundle, expected):
    from trainables.image import TrainConfig, make_protocol
    from trainables.image.train import DeviceData
    from trainables.image.tune_trainable import TeacherBundle, lineage_of

    data = DeviceData(make_protocol("digits"), "cpu")
    train = TrainConfig(objective=objective, objective_args=args, train_fraction=0.5)
    teachers = None if bundle is None else TeacherBundle(["{}"] * len(bundle), [{}] * len(bundle), 4,
                                                         lineages=bundle)
    assert lineage_of("digits", data, train, teachers) == f"id=digits/train[50%];outliers={expected};eval=val"


def test_a_fine_tune_inherits_the_outliers_of_its_initial_weights():
    """The weights a training starts from count like a teacher: an OE fine-tune of a CE network is ``direct``, a
    CE fine-tune of an OE network is ``initial`` (it saw no outlier batch, yet its weights did)."""
    def outliers(direct, teachers, initial):
        return training_lineage("digits", 0.5, False, "val", direct, teachers, initial).outliers

    assert outliers(True, None, CE_TEACHER) == "direct"
    assert outliers(False, None, CE_TEACHER) == "none"
    assert outliers(False, None, OE_TEACHER) == "initial"
    assert outliers(True, None, OE_TEACHER) == "direct+initial"
    assert outliers(False, [OE_TEACHER], OE_TEACHER) == "teachers+initial"
    assert outliers(False, None, "") == "unknown"  # initial weights recorded before lineage existed
    assert outliers(True, None, "") == "direct+initial"  # saw outliers either way: the unknown route is named too
    assert outliers(False, None, str(training_lineage("digits", 0.5, False, "val", False, [OE_TEACHER], None))) \
        == "initial"  # a teacher's outliers, passed on through the initial weights
    with pytest.raises(LineageError, match="has lineage id=digits/train;outliers=initial;eval=val"):
        Requirement(outliers=False).check("id=digits/train;outliers=initial;eval=val", "Figure 4.3 row ce", "x")


def test_the_trainable_fine_tunes_from_its_handed_over_weights_and_records_their_lineage():
    import pickle

    from search_space import SearchSpace
    from trainables.image import TrainConfig, make_protocol, train_candidate
    from trainables.image.tune_trainable import InitialWeights, candidate_trainable

    g = SearchSpace().sample(4)
    train = {"epochs": 1, "width": 4, "batch_size": 64, "flip": False, "scores": ["msp"], "objective": "ce",
             "train_fraction": 0.5}
    state = train_candidate(g, make_protocol("digits"), TrainConfig(**train))["state_dict"]
    initial = pickle.loads(pickle.dumps(InitialWeights({InitialWeights.key(g.arch_hash, 0): state},
                                                       {InitialWeights.key(g.arch_hash, 0): OE_TEACHER})))
    assert all(type(v).__name__ == "ndarray" for v in initial.state_dicts[f"{g.arch_hash}:0"].values())
    config = {"genotype": g.to_json(), "protocol": "digits", "protocol_options": {}, "train": train, "seed": 0}
    tuned = candidate_trainable(config, initial=initial)
    assert tuned["error"] is None and tuned["lineage"] == "id=digits/train[50%];outliers=initial;eval=val"
    missing = candidate_trainable({**config, "seed": 1}, initial=initial)  # its CE training failed: no weights
    assert missing["error"].startswith("no initial weights") and math.isnan(missing["auroc_msp"])


def test_a_bundle_without_recorded_lineages_is_unknown_not_clean():
    from trainables.image.tune_trainable import TeacherBundle

    bundle = TeacherBundle(["{}", "{}"], [{}, {}], 4)
    assert bundle.teacher_lineages() == ["", ""] and teachers_outliers(bundle.teacher_lineages()) == "unknown"
    del bundle.__dict__["lineages"]  # as unpickled from a run directory written before the field
    assert bundle.teacher_lineages() == ["", ""]


def test_a_requirement_names_the_column_and_the_result_in_one_line():
    need = Requirement(outliers=False, eval="test")
    need.check("id=digits/train;outliers=none;eval=test", "Table 4.1 column MSP", "x")
    with pytest.raises(LineageError) as err:
        need.check("id=digits/train;outliers=teachers;eval=test", "Table 4.1 column MSP", "the DCSOD row's `ab` seed 0")
    assert str(err.value) == ("Table 4.1 column MSP requires a result trained without auxiliary outliers (directly or "
                              "through teachers) and measured on the test split; the DCSOD row's `ab` seed 0 has "
                              "lineage id=digits/train;outliers=teachers;eval=test")
    with pytest.raises(LineageError, match="has no recorded lineage"):
        need.check("", "Table 4.1 column MSP", "x")
    with pytest.raises(LineageError, match="measured on the test split"):
        need.check("id=digits/train;outliers=none;eval=val", "Table 4.1 column MSP", "x")
    Requirement().check("id=a;outliers=direct;eval=val", "anything", "x")


def _frame(dcsod_plain_lineage: str) -> pd.DataFrame:
    from pipelines.thesis.methods import Winner
    from pipelines.thesis.tables import table_4_1_frame

    winner = Winner("dcsod", "DCSOD", "{}", "ab12", 0.9, 14)
    rows = []
    for seed in (0, 1):
        rows.append((winner, "retrain-plain", {"seed": seed, "auroc_msp": 0.8, "auroc_maha": 0.7, "id_acc": 0.9,
                                               "lineage": dcsod_plain_lineage}))
        rows.append((winner, "retrain-outliers", {"seed": seed, "auroc_msp": 0.85, "auroc_maha": 0.7, "id_acc": 0.9,
                                                  "lineage": "id=digits/train;outliers=direct+teachers;eval=test"}))
    return table_4_1_frame(rows)


def test_table_4_1_refuses_a_no_outlier_column_filled_by_a_distillation_from_outlier_teachers():
    """The old wiring (DCSOD's λ = 0 retrain distilled from the OE-trained final teachers) into the MSP column
    is an error naming the column; the fixed wiring (teachers of a run without outliers) passes."""
    from pipelines.thesis.tables import summarise_4_1

    summary = summarise_4_1(_frame("id=digits/train;outliers=none;eval=test"), has_outliers=True)
    assert summary.iloc[0]["MSP mean"] == pytest.approx(0.8) and summary.iloc[0]["OT n"] == 2
    with pytest.raises(LineageError) as err:
        summarise_4_1(_frame("id=digits/train;outliers=teachers;eval=test"), has_outliers=True)
    assert str(err.value).startswith("Table 4.1 column MSP requires a result trained without auxiliary outliers")
    assert "\n" not in str(err.value)


def test_table_4_3_refuses_a_lambda_0_row_whose_labels_or_retrains_saw_outliers():
    from pipelines.thesis.variants import check_row_lineage

    clean = {"arch_hash": "ab", "label_lineages": [CE_TEACHER],
             "per_seed": [{"seed": 0, "id_acc": 0.9, "lineage": "id=digits/train;outliers=none;eval=test"},
                          {"seed": 1, "id_acc": None, "lineage": ""}]}  # a failed retrain fills no cell
    check_row_lineage(clean, "Table 4.3 row (λ=0, α=0.5, β=–)", False)
    with pytest.raises(LineageError, match=r"^Table 4.3 row \(λ=0, α=0.5, β=–\), predictor τ requires"):
        check_row_lineage({**clean, "label_lineages": [OE_TEACHER]}, "Table 4.3 row (λ=0, α=0.5, β=–)", False)
    leaked = {**clean, "per_seed": [{"seed": 0, "id_acc": 0.9, "lineage": "id=d;outliers=teachers;eval=test"}]}
    with pytest.raises(LineageError, match="champion retrain requires"):
        check_row_lineage(leaked, "Table 4.3 row (λ=0, α=0.5, β=–)", False)
    check_row_lineage({**clean, "label_lineages": [OE_TEACHER]}, "Table 4.3 row (λ=0.5, α=0.5, β=0.2)", None)


def test_figure_4_3_refuses_a_ce_row_with_outliers_in_its_lineage():
    from pipelines.thesis.noise_study import check_lineage

    good = [{"arch_hash": "a", "seed": 0, "id_acc": 0.5, "lineage": CE_TEACHER}]
    check_lineage("ce", {}, good)
    check_lineage("oe", {}, [{**good[0], "lineage": OE_TEACHER}])  # a row with outliers: nothing to refuse
    with pytest.raises(LineageError, match="^Figure 4.3 row ce requires"):
        check_lineage("ce", {}, [{**good[0], "lineage": OE_TEACHER}])


def test_history_rows_carry_their_lineage_and_old_rows_read_as_unrecorded(tmp_path):
    from pipelines.nas.tracking import HistoryStore

    store = HistoryStore(tmp_path / "history.parquet")
    row = {"arch_hash": "a", "genotype": "{}", "stage": "warmup", "iteration": 0, "seed": 0, "id_acc": 0.5}
    store.append({**row, "lineage": CE_TEACHER})
    store.append({**row, "arch_hash": "b"})
    store.compact()
    df = HistoryStore(tmp_path / "history.parquet").read()
    assert dict(zip(df.arch_hash, df.lineage)) == {"a": CE_TEACHER, "b": ""}
    old = df.drop(columns=["lineage"])  # a history.parquet written before the column existed
    old.to_parquet(tmp_path / "old.parquet", index=False)
    assert list(HistoryStore(tmp_path / "old.parquet").read().lineage) == ["", ""]
    assert not math.isnan(df.id_acc.iloc[0])


def test_table_4_2_labels_of_the_plain_run_must_be_outlier_free():
    from pipelines.thesis.label_table import LABEL_LINEAGE, LABELS_4_2

    assert {name for name, _, _ in LABELS_4_2.values()} == set(LABEL_LINEAGE)
    LABEL_LINEAGE["plain"].check(CE_TEACHER, "Table 4.2 label CE-MSP", "x")
    with pytest.raises(LineageError, match="^Table 4.2 label CE-MSP requires a result trained without"):
        LABEL_LINEAGE["plain"].check(OE_TEACHER, "Table 4.2 label CE-MSP", "`ab`")  # the old OE-warmup wiring


def test_a_lineage_error_stops_a_command_with_its_one_line():
    from pipelines.common.rundir import stop_reason

    err = LineageError("Table 4.1 column MSP requires ...; the DCSOD row's `ab` seed 0 has lineage ...")
    assert stop_reason(err) == str(err)


def test_report_md_names_every_route_in_words():
    from pipelines.nas.report import lineage_phrase

    assert lineage_phrase("id=digits/train+val;outliers=direct+teachers;eval=test").startswith(
        "ID images `digits/train+val`, auxiliary outliers in its own objective and through its teachers; measured "
        "on the test split")
    assert "through the weights it was fine-tuned from" in lineage_phrase("id=d;outliers=initial;eval=val")
    assert lineage_phrase("").startswith("not recorded")
