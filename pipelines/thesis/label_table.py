"""Table 4.2: the predictor's held-out τ and ρ for five kinds of labels of the same architectures, trained
without auxiliary outliers (CE warmup; distillation with λ = 0) and with them (outlier exposure; eq. 4.11).
Each kind declares the data lineage its labels must have (:data:`LABELS_4_2`); a label of another lineage is a
:class:`~trainables.image.lineage.LineageError` naming the kind. ``tracking``: the command's MLflow parent.
"""
from __future__ import annotations

from pipelines.common.rundir import RunDir
from trainables.image.lineage import Requirement

#: Table 4.2's label kinds: name -> (labels run, stage records, metric). ``plain``: trained without outliers
#: (warmup with CE, distillation with λ = 0), so its labels must have none in their lineage; ``outliers``: with
#: them (outlier exposure, full eq. 4.11), where the protocol has auxiliary outliers.
LABELS_4_2 = {"ID-acc": ("plain", "warmup", "id_acc"), "CE-MSP": ("plain", "warmup", "auroc_msp"),
              "CE-OT": ("outliers", "warmup", "auroc_msp"), "DCSOD-MSP": ("plain", "distill", "auroc_msp"),
              "DCSOD-OT": ("outliers", "distill", "auroc_msp")}
#: What each labels run's lineage must be (validation-split labels; ``outliers``: either, as the protocol allows).
LABEL_LINEAGE = {"plain": Requirement(outliers=False, eval="val"), "outliers": Requirement(eval="val")}


def run_table_4_2(root: RunDir, exp: dict, cfg: dict, tracking, tracking_uri: str):
    import numpy as np
    import pandas as pd

    from pipelines.nas.teachers import NoUsableCandidates, usable
    from pipelines.nas.workflow import Workflow
    from pipelines.thesis.methods import without_outliers
    from pipelines.thesis.tables import write_table_4_2
    from search_space import Genotype, encode_many
    from search_space.predictor_quality import cross_validated_correlation

    n = exp["table_4_2"]["n"] or cfg["warmup"]["n"]
    base = {**cfg, "warmup": {**cfg["warmup"], "n": n}, "search": {**cfg["search"], "trials": 0}}
    variants = {"outliers": base, "plain": without_outliers(base)}
    stages = {}
    for name, settings in variants.items():
        wf = Workflow(RunDir.open(root / "labels" / name, settings), settings, tracking_uri,
                      experiment=tracking.experiment, tags=tracking.tags_for(f"labels-{name}"))
        warmup = wf.warmup()
        stages[(name, "warmup")] = warmup
        stages[(name, "distill")] = wf.distill(warmup)[0]
    labels = {}
    for kind, (name, stage, metric) in LABELS_4_2.items():
        labels[kind] = {r["arch_hash"]: (r["genotype"], r[metric]) for r in usable(stages[(name, stage)], metric)}
        for r in usable(stages[(name, stage)], metric):
            LABEL_LINEAGE[name].check(r.get("lineage") or "", f"Table 4.2 label {kind}", f"`{r['arch_hash']}`")
    common = sorted(set.intersection(*(set(v) for v in labels.values())))
    folds = exp["table_4_2"]["folds"]
    if len(common) < 2 * folds:
        raise NoUsableCandidates(f"table-4.2: only {len(common)} architectures have all five labels; "
                                 f"need at least {2 * folds} for {folds} folds")
    X = encode_many([Genotype.from_json(labels["ID-acc"][h][0]) for h in common])
    p = cfg["predictor"]
    rows, predictions = [], []
    for kind in LABELS_4_2:
        y = np.array([labels[kind][h][1] for h in common], dtype=float)
        q, predicted = cross_validated_correlation(p["name"], X, y, folds=folds, repeats=exp["table_4_2"]["repeats"],
                                                   n_boot=exp["bootstrap"], seed=cfg["seed"], **p["args"])
        rows.append({"label": kind, **q})
        predictions += [{"label": kind, "arch_hash": h, "measured": float(m), "predicted": float(f)}
                        for h, m, f in zip(common, y, predicted)]
    header = [f"# Table 4.2 — {cfg['protocol']} (preset {exp['preset']}, DCSOD settings {exp['pipeline']})", "",
              f"The same {len(common)} architectures, each labelled {len(LABELS_4_2)} ways: trained without "
              "auxiliary outliers (CE warmup: ID-acc, CE-MSP; distillation with λ = 0: DCSOD-MSP) and with them "
              "(outlier exposure: CE-OT; full distillation: DCSOD-OT), "
              f"{cfg['distill']['iterations']} distillation iteration(s). Predictor `{p['name']}`; every architecture "
              f"is predicted by a model fit on the other {folds - 1} of {folds} folds (the same folds for every "
              f"label), so τ and ρ are over all {len(common)} held-out predictions; repeated over "
              f"{exp['table_4_2']['repeats']} fold assignments (the mean is shown); 95% percentile intervals from "
              f"{exp['bootstrap']} bootstrap resamples pooled over the repeats. A τ whose interval spans 0 is not "
              "evidence of a ranking."]
    write_table_4_2(root.path, pd.DataFrame(rows), pd.DataFrame(predictions), header)
    metrics = {f"tau_{r['label'].lower().replace('-', '_')}": r["kendall_tau"] for r in rows}
    return ["table-4.2.md", "table-4.2.parquet", "table-4.2.png"], {"labels-outliers": metrics, "labels-plain": {}}
