"""Table 4.1: every method at the same budget, each winner retrained at the final budget once per seed without
and with auxiliary outliers (:mod:`pipelines.thesis.methods`), rendered by :mod:`pipelines.thesis.tables`, which
refuses a value whose data lineage does not fit its column. ``tracking``: the command's MLflow parent
(``pipelines/experiments.py``'s ``Tracking``: ``experiment``, ``tags_for(method)``).
"""
from __future__ import annotations

from pipelines.common.rundir import RunDir
from pipelines.thesis.settings import search_budget


def protocol_has_outliers(cfg: dict, records: list[dict]) -> bool:
    """Whether trainings with the warmup objective drew auxiliary outliers: from trained records where there
    are some, else by loading the protocol in the driver."""
    seen = [r["aux_images"] for r in records if r.get("aux_images") is not None]
    if seen:
        return any(n > 0 for n in seen)
    from trainables.image import make_protocol

    aux = make_protocol(cfg["protocol"], **cfg["protocol_options"]).aux
    return aux is not None and len(aux) > 0


def run_table_4_1(root: RunDir, exp: dict, cfg: dict, tracking, tracking_uri: str):
    from pipelines.common.rundir import read_json
    from pipelines.thesis.methods import METHODS, ExperimentContext
    from pipelines.thesis.tables import table_4_1_frame, write_table_4_1

    ctx = ExperimentContext(root, exp, cfg, tracking_uri, tracking.experiment, tracking.tags_for)
    found = {}
    for name in exp["methods"]:
        method = METHODS.build(name)
        wf = method.workflow(ctx)
        found[name] = (method, wf, method.search(ctx, wf))
    searched = [r for name in exp["methods"] for path in sorted((root / "methods" / name / "stages").glob("*.json"))
                if path.name.startswith(("warmup", "distill", "search")) for r in read_json(path)["records"]]
    ctx.has_outliers = protocol_has_outliers(cfg, searched)
    if exp["standard"]:
        method = METHODS.build("standard")
        wf = method.workflow(ctx)
        found = {"standard": (method, wf, method.search(ctx, wf)), **found}
    rows, method_metrics = [], {}
    for method, wf, winners in found.values():
        for stage, records in method.retrain(ctx, wf, winners).items():
            rows += [(w, stage, r) for w in winners for r in records if r["arch_hash"] == w.arch_hash]
    frame = table_4_1_frame(rows)
    budget = search_budget(cfg)
    header = [f"# Table 4.1 — {cfg['protocol']} (preset {exp['preset']}, DCSOD settings {exp['pipeline']})", "",
              f"Ranking metric during the searches: `{cfg['metric']}` on the validation split. Budget: every search "
              f"method trained {budget} candidates (DCSOD: warmup {cfg['warmup']['n']} + distillation "
              f"{budget - cfg['warmup']['n'] - cfg['search']['trials']} + search {cfg['search']['trials']}; the "
              f"teachers' forward passes are not counted) at the same per-candidate budget; each winner and each "
              f"standard architecture was retrained for {cfg['final']['epochs']} epochs on all ID training images"
              f"{' and the ID validation images' if cfg['final']['train_on_val'] else ''} "
              f"with seeds {exp['seeds']} and scored on the test split. Every search draws its random architectures "
              f"from the same seeded stream (common random numbers: random search's first candidates, regularized "
              f"evolution's first population and both predictor methods' warmup are the same architectures), so "
              f"two rows with the same architecture found the same winner."]
    summary = write_table_4_1(root.path, frame, ctx.has_outliers, header)
    for name in found:  # per method run: every column's mean and sd (standard rows prefixed by arch_hash)
        metrics = method_metrics.setdefault(name, {})
        for _, row in summary[summary["method"] == name].iterrows():
            prefix = f"{row['arch_hash']}." if name == "standard" else ""
            for column in [c for c in summary.columns if c.endswith((" mean", " sd"))]:
                what, stat = column.rsplit(" ", 1)
                metrics[f"{prefix}{what.lower().replace('-', '_')}_{stat}"] = row[column]
    return ["table-4.1.md", "table-4.1.parquet", "table-4.1.png"], method_metrics
