"""Figures about DCSOD's champion: Figure 4.5 (loss landscapes after cross-entropy and after distillation
training) and Figure 4.6 (its three cells drawn as DAGs).

Both start from the DCSOD method's run directory ``<output>/methods/dcsod`` (the same stages as Table 4.1's DCSOD
row: a finished one is read back). Figure 4.5 then retrains the champion at the final budget twice, as Tune
stages — with cross-entropy (``retrain-plain``) and with the distillation loss and the final teachers
(``retrain``) — and computes each network's loss surface along two random filter-normalised directions (Li et al.
2018; :mod:`trainables.image.loss_landscape`) in one Ray task per network with the pipeline's per-trial resources.
Which loss each surface measures is ``landscape.loss``: ``own`` (the thesis's) measures each network under its
own training objective — the CE-trained one under cross-entropy on ``landscape.images`` fixed ID training
images, the distillation-trained one under eq. 4.11 on the same ID images with the final teachers' probabilities
and as many fixed auxiliary outliers with theirs (computed once, no augmentation: a deterministic function of
the weights) — so the panels compare shapes, each in its own units; ``ce`` measures both under cross-entropy
(comparable numbers). ``sharpness`` (the mean loss rise on the ring at half the span) makes a panel's shape a
number. A finished surface is kept in ``landscape-<name>.json`` (with the loss it measures) and read back on a
rerun that asks for the same loss.
"""
from __future__ import annotations

import json
import math

from pipelines.common.rundir import RunDir, read_json, write_json, write_text
from pipelines.nas.tune_stage import Stage


def measured_loss(train: dict, setting: str) -> str:
    """The objective a surface measures: ``ce`` under ``landscape.loss: ce``, else the training's own."""
    return "ce" if setting == "ce" else train["objective"]


def loss_label(objective: str) -> str:
    """The loss in words, for the figure and its table."""
    return {"ce": "cross-entropy", "distill": "outlier distillation (eq. 4.11)", "oe": "outlier exposure",
            "energy": "energy-bounded"}.get(objective, objective)


def landscape_task(genotype: str, state_dict: dict, protocol: str, options: dict, train: dict, settings: dict,
                   seed: int, teachers=None) -> dict:
    """Build the network of ``genotype`` with ``state_dict`` on the task's device and compute its landscape under
    :func:`measured_loss` (``teachers``: the :class:`~trainables.image.tune_trainable.TeacherBundle` it distilled
    from, for its own distillation loss). The result's arrays as lists, plus ``loss`` (the objective's name).
    Ray-free body."""
    import torch

    from search_space.architecture import build_model
    from trainables.image.loss_landscape import landscape
    from trainables.image.train import resolve_device
    from trainables.image.tune_trainable import device_data, stage_train_config

    device = resolve_device("auto")
    data, _ = device_data(protocol, options, device)
    config = stage_train_config({"train": train, "seed": seed}, data, device)  # distill without outliers: λ = 0
    model = build_model(genotype, data.protocol.num_classes, data.protocol.in_channels, config.width)
    model.load_state_dict(state_dict)
    model.to(device)
    loss = measured_loss(train, settings["loss"])
    loss_fn = landscape_loss_fn(model, data, config, teachers, settings["images"], loss)
    torch.manual_seed(seed)
    out = landscape(model, loss_fn, steps=settings["steps"], span=settings["span"], seed=seed)
    return {**{k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in out.items()}, "loss": loss}


def landscape_loss_fn(model, data, config, teachers, n: int, loss: str):
    """The closure a surface measures (:func:`trainables.image.loss_landscape.training_loss_fn`) over the first
    ``n`` ID training images (normalised like the trainer's inputs): cross-entropy for ``loss == "ce"``, else
    ``config``'s objective with, where it needs them, :func:`fixed_outliers` (``n`` of them) and the teachers'
    probabilities at its temperature on both sets (computed here, once)."""
    from trainables.image.loss_landscape import fixed_teacher_probs, training_loss_fn
    from trainables.image.losses import make_objective

    images, labels = data.norm(data.train_x[:n]), data.train_y[:n]
    if loss == "ce":
        return training_loss_fn(model, images, labels)
    objective = make_objective(config.objective, **config.objective_args)
    outliers = fixed_outliers(data, n) if objective.needs_outliers else None
    teacher_in = teacher_out = None
    if objective.needs_teacher:
        ensemble = teachers.build(data.protocol.num_classes, data.protocol.in_channels, data.device)
        teacher_in = fixed_teacher_probs(ensemble, images, objective.temperature)
        teacher_out = None if outliers is None else fixed_teacher_probs(ensemble, outliers, objective.temperature)
    return training_loss_fn(model, images, labels, objective, outliers=outliers, teacher_in=teacher_in,
                            teacher_out=teacher_out)


def fixed_outliers(data, n: int):
    """``min(n, len(aux))`` auxiliary outlier images at evenly spaced positions of the auxiliary set (which may be
    stored class by class: every class is represented), normalised, float ``(M, C, H, W)``; None without
    auxiliary outliers. Deterministic."""
    import torch

    if data.aux is None or len(data.aux) == 0:
        return None
    index = torch.linspace(0, len(data.aux) - 1, min(n, len(data.aux))).round().long().to(data.aux.device)
    return data.norm(data.aux[index])


def champion(ctx):
    """The DCSOD method's workflow, its champion (a Table 4.1 :class:`~pipelines.thesis.methods.Winner`) and
    its final teachers."""
    from pipelines.thesis.methods import DCSOD

    method = DCSOD()
    wf = method.workflow(ctx)
    winner, = method.search(ctx, wf)
    return wf, winner, method.retrain_teachers(ctx, wf, outliers=True)


def run_fig_4_5(root: RunDir, exp: dict, cfg: dict, tracking, tracking_uri: str):
    from pipelines.thesis.methods import ExperimentContext

    ctx = ExperimentContext(root, exp, cfg, tracking_uri, tracking.experiment, tracking.tags_for)
    wf, winner, teachers = champion(ctx)
    trainings = {"cross-entropy": ("retrain-plain", {**wf.final_train(None), "objective": "ce"}, None)}
    if teachers is not None:
        trainings["distillation"] = ("retrain", wf.final_train(teachers), teachers)
    results = {name: measure(root, wf, winner, name, training, exp, cfg) for name, training in trainings.items()}
    rows = [{"training": name, "loss": r["loss"], "sharpness": r["sharpness"], "center_loss": r["center_loss"],
             "radius": r["radius"], "test_metric": r.get("test_auroc"), "id_acc": r.get("id_acc")}
            for name, r in results.items()]
    write_fig_4_5(root, results, rows, winner, exp, cfg)
    return ["fig-4.5.md", "fig-4.5.parquet", "fig-4.5.png"], {"dcsod": {f"sharpness_{r['training']}": r["sharpness"]
                                                                       for r in rows}}


def measure(root: RunDir, wf, winner, name: str, training: tuple, exp: dict, cfg: dict) -> dict:
    """One network's surface: read back from ``landscape-<name>.json`` when it measured the loss asked for (a
    file without ``loss`` measured cross-entropy), else the champion retrained in the Tune stage of ``training``
    (``(stage, train settings, teacher bundle or None)``) and its landscape computed in one Ray task."""
    import ray
    from ray.tune import Checkpoint

    from trainables.image.tune_trainable import load_weights

    stage, train, bundle = training
    settings, seed = exp["landscape"], exp["seeds"][0]
    path = root / f"landscape-{name}.json"
    cached = {"loss": "ce", **read_json(path)} if path.exists() else None
    if cached is not None and cached["loss"] == measured_loss(train, settings["loss"]):
        return cached
    record, = wf.evaluate(Stage(stage, stage, 0, train, genotypes=[winner.genotype], seeds=[seed], teachers=bundle))
    state_dict = load_weights(Checkpoint(record["checkpoint"]))
    task = ray.remote(landscape_task).options(num_cpus=cfg["resources"]["cpu"], num_gpus=cfg["resources"]["gpu"])
    result = ray.get(task.remote(winner.genotype, state_dict, cfg["protocol"], cfg["protocol_options"], train,
                                 settings, seed, bundle))
    result.update(test_auroc=record.get(cfg["metric"]), id_acc=record.get("id_acc"))
    write_json(path, result)
    return result


def write_fig_4_5(root: RunDir, results: dict, rows: list[dict], winner, exp: dict, cfg: dict) -> None:
    """``fig-4.5.png`` (one panel per network, titled with the loss it measures; shared colour levels only when
    every panel measures the same loss), ``fig-4.5.md`` and ``fig-4.5.parquet`` (one row per network)."""
    import pandas as pd

    from pipelines.common.rundir import atomic_write
    from trainables.image.loss_landscape import plot_landscapes

    settings, seed = exp["landscape"], exp["seeds"][0]
    same_loss = len({r["loss"] for r in rows}) == 1
    panels = {f"{name}-trained, {loss_label(r['loss'])} loss": r for name, r in results.items()}
    plot_landscapes(panels, root.path / "fig-4.5.png", title=f"Figure 4.5: loss landscape of {winner.arch_hash}",
                    shared_levels=same_loss)
    lines = [f"# Figure 4.5 — loss landscape of the champion `{winner.arch_hash}`, {cfg['protocol']} "
             f"(preset {exp['preset']})", "",
             f"The champion retrained {cfg['final']['epochs']} epochs (seed {seed}) with each loss; each surface "
             f"is measured on a {settings['steps']}×{settings['steps']} grid spanning ±{settings['span']} along two "
             "random filter-normalised directions (the same directions' seed for both networks; eval mode) under "
             f"{landscape_text(settings)}. sharpness: the mean loss rise on the ring at half the span, in the "
             "panel's loss units; lower = flatter.", "",
             f"| training | loss measured | centre loss | sharpness (radius) | test {cfg['metric']} | ID-Acc |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['training']} | {loss_label(r['loss'])} | {r['center_loss']:.3f} | {r['sharpness']:.3f} "
                     f"({r['radius']:g}) | {_pct(r['test_metric'])} | {_pct(r['id_acc'])} |")
    lines += ["", closing_text(rows, same_loss)]
    write_text(root.path / "fig-4.5.md", "\n".join(lines) + "\n")
    frame = pd.DataFrame(rows)
    atomic_write(root.path / "fig-4.5.parquet", lambda tmp: frame.to_parquet(tmp, index=False))


def landscape_text(settings: dict) -> str:
    """What each surface measures, in words (``landscape.loss``)."""
    n = settings["images"]
    if settings["loss"] == "ce":
        return f"the cross-entropy of each network over {n} fixed ID training images (`landscape.loss: ce`)"
    return (f"each network's own training loss (`landscape.loss: own`, the thesis's comparison): the "
            f"cross-entropy-trained network under cross-entropy over {n} fixed ID training images, the "
            "distillation-trained network under the outlier-distillation objective it trained with (eq. 4.11) over "
            f"the same ID images with the final teachers' probabilities and up to {n} fixed auxiliary outliers "
            "(evenly spaced over the auxiliary set) with theirs, computed once")


def closing_text(rows: list[dict], same_loss: bool) -> str:
    """The sentence under the table: which network is flatter (one loss), or why the numbers do not compare."""
    if len(rows) < 2:
        return "One network only (no distillation teachers): nothing to compare."
    if same_loss:
        flatter = min(rows, key=lambda r: r["sharpness"])["training"]
        return (f"The {flatter} network sits in the flatter region at this radius. One seed and one pair of "
                "directions: a shape, not a statistic.")
    return ("The panels measure different losses, in different units and with their own colour scales: compare "
            "the shapes (how fast each loss rises away from its trained weights), not the numbers across rows. One "
            "seed and one pair of directions: a shape, not a statistic.")


def _pct(value) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{100 * value:.1f}"


def run_fig_4_6(root: RunDir, exp: dict, cfg: dict, tracking, tracking_uri: str):
    from pipelines.thesis.methods import ExperimentContext
    from search_space import Genotype, draw_genotype

    ctx = ExperimentContext(root, exp, cfg, tracking_uri, tracking.experiment, tracking.tags_for)
    _, winner, _ = champion(ctx)
    draw_genotype(winner.genotype, root.path / "fig-4.6.png", title=f"Figure 4.6: DCSOD champion {winner.arch_hash}")
    genotype = Genotype.from_json(winner.genotype)
    live = [len(c.live) - 1 for c in genotype.cells]
    lines = [f"# Figure 4.6 — the champion's cells, {cfg['protocol']} (preset {exp['preset']})", "",
             f"Champion `{winner.arch_hash}` of the DCSOD run in `methods/dcsod` ({cfg['metric']} "
             f"{winner.searched:.4f} on the validation split at the search budget). Each panel is one stage's cell: "
             "`v0` is the previous cell's output, every operator vertex applies its operator to the concatenation of "
             "its predecessors, the leaves are concatenated into the output"
             + (" (plus the input: residual wiring)" if genotype.residual else "") + f"; live operators per cell: "
             f"{live}.", "", "![champion cells](fig-4.6.png)", "", "```json", json.dumps(genotype.to_dict()), "```"]
    write_text(root.path / "fig-4.6.md", "\n".join(lines) + "\n")
    return ["fig-4.6.md", "fig-4.6.png"], {}
