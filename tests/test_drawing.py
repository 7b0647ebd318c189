"""Cells drawn as DAGs (``search_space.drawing``): the layout, the PNG, the standard-model error, the champion's
drawing in report.md and in its MLflow run."""
import json
import logging

import fake_stages
import pytest

from search_space import SearchSpace, default_ops
from search_space.drawing import draw_cell, draw_genotype, layout
from search_space.genotype import Cell, Genotype

PNG = b"\x89PNG\r\n\x1a\n"


def sampled(ks=(4, 6, 8), seeds=(0, 1, 2)):
    return [SearchSpace(k=k).sample(seed) for k in ks for seed in seeds]


def drawn_edges(cell: Cell) -> list[tuple[int, int]]:
    pruned = cell.pruned()
    return sorted(pruned.edges) + [(v, cell.k) for v in pruned.leaves()]


@pytest.mark.parametrize("genotype", sampled(), ids=lambda g: f"k{g.k}-{g.arch_hash[:6]}")
def test_draw_genotype_writes_a_png_atomically(tmp_path, genotype):
    out = tmp_path / "cells" / "g.png"
    assert draw_genotype(genotype, out, title="a title") == out
    data = out.read_bytes()
    assert data.startswith(PNG) and len(data) > 5000
    assert [p.name for p in out.parent.iterdir()] == ["g.png"]  # no temporary file left behind


def test_draw_genotype_takes_json_or_dict_and_replaces_the_file(tmp_path):
    genotype = SearchSpace(k=4, residual=False).sample(5)
    out = tmp_path / "g.png"
    out.write_bytes(b"old")
    draw_genotype(genotype.to_json(), out)
    assert out.read_bytes().startswith(PNG)
    draw_genotype(genotype.to_dict(), str(out))
    assert [p.name for p in tmp_path.iterdir()] == ["g.png"] and out.read_bytes().startswith(PNG)


@pytest.mark.parametrize("genotype", sampled(ks=(2, 4, 6, 8, 10), seeds=range(4)),
                         ids=lambda g: f"k{g.k}-{g.arch_hash[:6]}")
def test_layout_places_exactly_the_live_vertices_left_to_right(genotype):
    for cell in genotype.cells:
        pos = layout(cell)
        assert set(pos) == set(cell.live) | {cell.k}
        assert pos[0] == (0.0, 0.0)
        assert all(x > 0 for v, (x, _) in pos.items() if v != 0)
        assert all(x < pos[cell.k][0] for v, (x, _) in pos.items() if v != cell.k)  # the output is rightmost
        for j, i in drawn_edges(cell):
            assert pos[j][0] < pos[i][0], (j, i)
        assert len(set(pos.values())) == len(pos)  # no two vertices on one spot
        assert layout(Genotype.from_json(genotype.to_json()).cells[genotype.cells.index(cell)]) == pos


def test_layout_layers_are_longest_paths_and_dead_vertices_are_left_out():
    # v0 -> v1 -> v2, v0 -> v2 (v2 is two layers deep); v3 and v4 are unreachable (v3 -> v4, v3 -> v5 dead edges)
    cell = Cell.create(default_ops(6), [(0, 1), (1, 2), (0, 2), (3, 4), (3, 5), (0, 5)])
    pos = layout(cell)
    assert set(pos) == {0, 1, 2, 5, 6}
    assert {v: x for v, (x, _) in pos.items()} == {0: 0.0, 1: 1.0, 5: 1.0, 2: 2.0, 6: 3.0}
    assert pos[1][1] != pos[5][1] and abs(pos[1][1] + pos[5][1]) < 1e-12  # a layer is centred on v0's row


def test_draw_cell_draws_the_live_vertices_their_operators_and_edges():
    from matplotlib.figure import Figure
    from matplotlib.patches import FancyArrowPatch

    cell = Cell.create(default_ops(6), [(0, 1), (1, 2), (0, 2), (3, 4), (3, 5), (0, 5)])
    for residual in (True, False):
        ax = Figure().subplots()
        draw_cell(cell, ax, title="stage 1 cell", residual=residual)
        texts = [t.get_text() for t in ax.texts]
        assert {t for t in texts if t[:1] == "v" and t[1:].isdigit()} == {"v0", "v1", "v2", "v5", "v6"}
        assert "input" in texts and ("output\n+ input" if residual else "output") in texts
        assert sorted(t for t in texts if t in cell.ops) == sorted(cell.ops[v - 1] for v in (1, 2, 5))
        assert any("v3, v4" in t for t in texts)  # the footnote names the pruned vertices
        assert sum(isinstance(p, FancyArrowPatch) for p in ax.patches) == len(drawn_edges(cell)) == 6
        assert ax.get_title() == "stage 1 cell"


@pytest.mark.parametrize("standard", ['{"args":{"depth":20},"model":"resnet"}', {"model": "resnet"}])
def test_a_standard_model_has_no_cells(tmp_path, standard):
    with pytest.raises(ValueError, match="only searched genotypes have cells") as err:
        draw_genotype(standard, tmp_path / "x.png")
    assert "\n" not in str(err.value)
    assert not list(tmp_path.iterdir())


def test_malformed_genotypes_are_one_line_errors(tmp_path):
    for bad in ("{not json", '{"cells": []}', 42):
        with pytest.raises(ValueError) as err:
            draw_genotype(bad, tmp_path / "x.png")
        assert "\n" not in str(err.value)


def test_draw_genotype_is_exported_lazily():
    import search_space

    assert search_space.draw_genotype is draw_genotype


def finished_fake_run(monkeypatch, tmp_path):
    """A fake DCSOD run through ``flow.final`` whose run directory also has what report.md reads: the history
    rows of every stage and each stage's timing statistics."""
    import pipelines.nas.workflow as workflow
    from pipelines.nas.tracking import HistoryStore

    fake_stages.install(monkeypatch)
    fake_run_stage = workflow.run_stage

    def run_stage(run, cfg, stage, experiment, tracking_uri, tags=None):
        records, stats = fake_run_stage(run, cfg, stage, experiment, tracking_uri, tags)
        store = HistoryStore(run / "history.parquet")
        for r in records:
            store.append({k: r[k] for k in ("arch_hash", "genotype", "stage", "iteration", "seed", "auroc_msp",
                                            "id_acc")})
        return records, {**stats, "wall_seconds": 1.0, "mean_train_seconds": 0.1, "mean_trainable_seconds": 0.2,
                         "overhead_seconds_per_trial": 0.05, "gap_seconds_per_trial": 0.01}

    monkeypatch.setattr(workflow, "run_stage", run_stage)
    flow = fake_stages.make_flow(tmp_path)
    records, teachers = flow.distill(flow.warmup())
    flow.predictor(records)
    best = flow.final(records, teachers)
    HistoryStore(flow.run / "history.parquet").append(
        {"arch_hash": best["arch_hash"], "genotype": Genotype.from_dict(best["genotype"]).to_json(), "stage": "final",
         "iteration": 0, "seed": flow.cfg["seed"], "auroc_msp": 0.8, "id_acc": 0.9})
    return flow, best


def test_report_embeds_the_champions_cells(monkeypatch, tmp_path):
    from pipelines.nas.report import write_report

    flow, best = finished_fake_run(monkeypatch, tmp_path)
    write_report(flow.run, flow.cfg, best)
    image = flow.run / "champion_cells.png"
    assert image.read_bytes().startswith(PNG)
    text = (flow.run / "report.md").read_text()
    lines = text.splitlines()
    at = lines.index("### The champion's cells")
    assert lines[at + 2] == "![champion cells](champion_cells.png)"
    assert lines.index("## Champion") < at < lines.index("## Predictor")
    assert lines[at - 2].startswith("- warmup architectures")  # right after the champion's bullet list
    assert "![search trajectory](search_trajectory.png)" in text  # the rest is still there


class LoggingTracker(fake_stages.FakeTracker):
    """The fake tracker, but it runs ``before_finish`` like the real one (before the MLflow run ends)."""

    def record(self, result, before_finish=None):
        run_id = super().record(result)
        before_finish(run_id)
        return run_id


@pytest.mark.parametrize("fails", [False, True])
def test_final_logs_the_champions_cells_to_its_mlflow_run(monkeypatch, tmp_path, caplog, fails):
    import mlflow

    import pipelines.nas.tracking

    logged = []

    class Client:
        def __init__(self, tracking_uri):
            self.tracking_uri = tracking_uri

        def log_artifact(self, run_id, path):
            if fails:
                raise OSError("artifact store unreachable")
            logged.append((self.tracking_uri, run_id, path.rsplit("/", 1)[-1], open(path, "rb").read(8)))

    fake_stages.install(monkeypatch)
    monkeypatch.setattr(pipelines.nas.tracking, "MLflowHistoryCallback", LoggingTracker)
    monkeypatch.setattr(mlflow, "MlflowClient", Client)
    flow = fake_stages.make_flow(tmp_path)
    records, teachers = flow.distill(flow.warmup())
    flow.predictor(records)
    with caplog.at_level(logging.WARNING, logger="pipelines.nas.workflow"):
        best = flow.final(records, teachers)
    assert json.loads((flow.run / "best.json").read_text()) == best  # the run finished either way
    if fails:
        assert not logged and "champion_cells.png not logged" in caplog.text
    else:
        assert logged == [(f"sqlite:///{tmp_path / 'unused.db'}", best["model"]["run_id"], "champion_cells.png", PNG)]


def test_predicted_vs_measured_draws_the_identity_line(monkeypatch, tmp_path):
    import pipelines.nas.report as report

    flow, best = finished_fake_run(monkeypatch, tmp_path)
    saved = {}
    monkeypatch.setattr(report, "_savefig", lambda fig, path: saved.setdefault(path.name, fig))
    report.plot_predicted_vs_measured(flow.run, flow.cfg["metric"])
    ax = saved["predicted_vs_measured.png"].axes[0]
    (line,) = [ln for ln in ax.get_lines() if ln.get_label() == "y = x"]
    xs, ys = line.get_data()
    assert list(xs) == list(ys) and xs[0] < xs[1]
