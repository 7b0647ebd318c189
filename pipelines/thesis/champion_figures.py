"""Figures about DCSOD's champion: Figure 4.5 (loss landscapes after cross-entropy and after distillation
training) and Figure 4.6 (its three cells drawn as DAGs).

Both start from the DCSOD method's run directory ``<output>/methods/dcsod`` (the same stages as Table 4.1's DCSOD
row: a finished one is read back). Figure 4.5 then retrains the champion at the final budget twice, as Tune
stages — with cross-entropy (``retrain-plain``) and with the distillation loss and the final teachers
(``retrain``) — and computes each network's loss surface along two random filter-normalised directions (Li et al.
2018; :mod:`trainables.image.loss_landscape`) in one Ray task per network with the pipeline's per-trial resources. Both
surfaces measure the same loss (cross-entropy on ``landscape.images`` fixed ID training images), so they are
comparable; ``sharpness`` (the mean loss rise on the ring at half the span) makes the comparison a number. A
finished surface is kept in ``landscape-<name>.json`` and read back on a rerun.
"""
from __future__ import annotations

import json
import math

from pipelines.common.rundir import RunDir, read_json, write_json, write_text
from pipelines.nas.tune_stage import Stage


def landscape_task(genotype: str, state_dict: dict, protocol: str, options: dict, train: dict, settings: dict,
                   seed: int) -> dict:
    """Build the network of ``genotype`` with ``state_dict`` on the task's device and compute its landscape over
    the first ``settings["images"]`` ID training images (normalised like the trainer's inputs). Ray-free body."""
    import torch

    from pipelines.nas.settings import train_config_of
    from search_space.architecture import build_model
    from trainables.image.loss_landscape import landscape, training_loss_fn
    from trainables.image.train import resolve_device
    from trainables.image.tune_trainable import device_data

    device = resolve_device("auto")
    data, _ = device_data(protocol, options, device)
    width = train_config_of(train).width
    model = build_model(genotype, data.protocol.num_classes, data.protocol.in_channels, width)
    model.load_state_dict(state_dict)
    model.to(device)
    n = settings["images"]
    images, labels = data.norm(data.train_x[:n]), data.train_y[:n]
    torch.manual_seed(seed)
    out = landscape(model, training_loss_fn(model, images, labels), steps=settings["steps"], span=settings["span"],
                    seed=seed)
    return {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in out.items()}


def champion(ctx):
    """The DCSOD method's workflow, its champion (a Table 4.1 :class:`~pipelines.thesis.methods.Winner`) and
    its final teachers."""
    from pipelines.thesis.methods import DCSOD

    method = DCSOD()
    wf = method.workflow(ctx)
    winner, = method.search(ctx, wf)
    return wf, winner, method.retrain_teachers(ctx, wf, outliers=True)


def run_fig_4_5(root: RunDir, exp: dict, cfg: dict, tracking, tracking_uri: str):
    import ray

    from pipelines.thesis.methods import ExperimentContext
    from trainables.image.loss_landscape import plot_landscapes
    from trainables.image.tune_trainable import load_weights

    ctx = ExperimentContext(root, exp, cfg, tracking_uri, tracking.experiment, tracking.tags_for)
    wf, winner, teachers = champion(ctx)
    settings = exp["landscape"]
    seed = exp["seeds"][0]
    trainings = {"cross-entropy": ("retrain-plain", {**wf.final_train(None), "objective": "ce"}, None)}
    if teachers is not None:
        trainings["distillation"] = ("retrain", wf.final_train(teachers), teachers)
    results = {}
    for name, (stage, train, bundle) in trainings.items():
        path = root / f"landscape-{name}.json"
        if path.exists():
            results[name] = read_json(path)
            continue
        record, = wf.evaluate(Stage(stage, stage, 0, train, genotypes=[winner.genotype], seeds=[seed],
                                    teachers=bundle))
        from ray.tune import Checkpoint

        state_dict = load_weights(Checkpoint(record["checkpoint"]))
        task = ray.remote(landscape_task).options(num_cpus=cfg["resources"]["cpu"], num_gpus=cfg["resources"]["gpu"])
        result = ray.get(task.remote(winner.genotype, state_dict, cfg["protocol"], cfg["protocol_options"], train,
                                     settings, seed))
        result.update(test_auroc=record.get(cfg["metric"]), id_acc=record.get("id_acc"))
        write_json(path, result)
        results[name] = result
    plot_landscapes(results, root.path / "fig-4.5.png", title=f"Figure 4.5: loss landscape of {winner.arch_hash}")
    rows = [{"training": name, "sharpness": r["sharpness"], "center_loss": r["center_loss"], "radius": r["radius"],
             "test_metric": r.get("test_auroc"), "id_acc": r.get("id_acc")} for name, r in results.items()]
    lines = [f"# Figure 4.5 — loss landscape of the champion `{winner.arch_hash}`, {cfg['protocol']} "
             f"(preset {exp['preset']})", "",
             f"The champion retrained {cfg['final']['epochs']} epochs (seed {seed}) with each loss, then the "
             f"cross-entropy over {settings['images']} ID training images on a {settings['steps']}×{settings['steps']}"
             f" grid spanning ±{settings['span']} along two random filter-normalised directions (the same "
             "directions' seed for both networks; eval mode). sharpness: the mean loss rise (nats) on the ring at "
             "half the span; lower = flatter.", "",
             f"| training | centre loss | sharpness (radius) | test {cfg['metric']} | ID-Acc |",
             "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['training']} | {r['center_loss']:.3f} | {r['sharpness']:.3f} ({r['radius']:g}) | "
                     f"{_pct(r['test_metric'])} | {_pct(r['id_acc'])} |")
    if len(rows) == 2:
        flatter = min(rows, key=lambda r: r["sharpness"])["training"]
        lines += ["", f"The {flatter} network sits in the flatter region at this radius. One seed and one pair of "
                  "directions: a shape, not a statistic."]
    write_text(root.path / "fig-4.5.md", "\n".join(lines) + "\n")
    import pandas as pd

    from pipelines.common.rundir import atomic_write

    frame = pd.DataFrame(rows)
    atomic_write(root.path / "fig-4.5.parquet", lambda tmp: frame.to_parquet(tmp, index=False))
    return ["fig-4.5.md", "fig-4.5.parquet", "fig-4.5.png"], {"dcsod": {f"sharpness_{r['training']}": r["sharpness"]
                                                                       for r in rows}}


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
