"""What an experiment command will cost, counted before it runs (``python pipelines/experiments.py COMMAND --plan``;
every run prints the same lines first).

>>> from pipelines.thesis.settings import load_experiment
>>> exp, cfg = load_experiment("ci")
>>> groups = planned_trainings("fig-4.6", exp, cfg)
>>> [(g.what, g.count, g.teachers) for g in groups]
[('DCSOD: warmup', 6, 0), ('DCSOD: distillation', 6, 3), ('DCSOD: search', 2, 3)]

Units: a **candidate** is one training at the DCSOD pipeline's per-candidate budget (``train.epochs`` epochs on
``search_fraction`` of the ID training images, at ``train.batch_size``) without teachers; every planned training
is counted in candidates:

- a final-budget retrain costs ``final.epochs / train.epochs / search_fraction`` candidates (all ID training images
  instead of the search part; the validation images a ``final.train_on_val`` retrain adds are not counted: their
  number is known only once the protocol is loaded);
- a distillation training with ``teacher_mode: online`` (the default) runs every teacher of its ensemble forward
  on every batch (``CandidateTraining.loss`` in ``trainables/image/train.py``): with E teachers it costs
  ``1 + E × FORWARD_SHARE`` times the same training without them. With ``teacher_mode: cached`` the ensemble runs
  once per worker process and teacher set over the un-augmented training and auxiliary images
  (``TeacherCache``), not on every batch; that pass is not costed;
- a standard architecture (ResNet-110, WRN-40-2, DenseNet-BC-100) is costed as a candidate, which it is not: its
  real cost is not measured.

Seconds: ``seconds_per_candidate`` of the experiment's preset (``pipelines/presets/experiments.yaml``) is null (no
time estimate) or a mapping: ``seconds`` of one candidate on ``device`` at ``batch_size`` (null: the pipeline's),
and where the figure comes from, either ``measured: {file, date}`` (a measurement of this project, recorded with
its command in ``file``, e.g. ``benchmarks/RESULTS.md``) or ``assumed`` (one line naming the figure's source; the
estimate then says "not measured, assumed"). A figure taken at another batch size than the pipeline trains with
is scaled by the number of SGD steps per epoch (seconds × figure's batch / pipeline's batch), which assumes that a
step costs the same at either batch size (a launch-bound small network); the estimate says so.
"""
from __future__ import annotations

from dataclasses import dataclass

from pipelines.nas.settings import parse_count, train_config
from pipelines.thesis.settings import search_budget

#: One network's forward pass as a fraction of its training step (forward + backward ≈ 3 forwards, in FLOPs and in
#: kernel launches alike). Assumed, not measured: it prices an online teacher's forward pass.
FORWARD_SHARE = 1 / 3


@dataclass(frozen=True)
class Trainings:
    """``count`` trainings of one kind: ``what`` they are, ``size`` (candidates per training without teachers: 1
    for a candidate, :func:`retrain_size` for a final-budget ``retrain``), ``teachers`` (ensemble members run for
    each of them; 0: none) and ``mode`` (``online``: every teacher on every batch; ``cached``: once per worker, not
    costed)."""

    what: str
    count: int
    size: float = 1.0
    teachers: int = 0
    mode: str = "online"
    retrain: bool = False

    @property
    def online(self) -> int:
        """Teachers run forward on every batch."""
        return self.teachers if self.mode == "online" else 0

    @property
    def candidates(self) -> float:
        """What these trainings cost, in candidates (teachers' forward passes included)."""
        return self.count * self.size * (1 + self.online * FORWARD_SHARE)


def ensemble_size(distill: dict, pool: int) -> int:
    """Teachers chosen from a pool of ``pool`` evaluated architectures (``distill.top`` best plus
    ``distill.random`` others, counts or percentages; as ``pipelines.nas.teachers.choose_teachers``, every
    architecture of the pool assumed usable)."""
    top = min(pool, parse_count(distill["top"], pool))
    return top + min(pool - top, parse_count(distill["random"], pool))


def retrain_size(cfg: dict) -> float:
    """Candidates one final-budget retrain costs: ``final.epochs / train.epochs`` on all the ID training images
    instead of ``search_fraction`` of them."""
    return cfg["final"]["epochs"] / train_config(cfg).epochs / cfg["search_fraction"]


def _teachers(cfg: dict) -> int:
    """The ensemble of a DCSOD run's distillation, search and final retrain (0 without distillation), chosen
    from the pool: Alg. 2: N; Alg. 3: the final pool N + q·I (an upper bound for percentage counts)."""
    n, d = cfg["warmup"]["n"], cfg["distill"]
    if not d["iterations"]:
        return 0
    return ensemble_size(d, n + (d["q"] * d["iterations"] if d["algorithm"] == "alg3" else 0))


def dcsod_run(cfg: dict, what: str, search: bool = True) -> list[Trainings]:
    """One DCSOD run's candidate trainings: warmup N without teachers, distillation with its ensemble
    (:func:`_teachers`) and, with ``search``, the search's M trials (with the final teachers when there is
    distillation)."""
    n, d, m = cfg["warmup"]["n"], cfg["distill"], cfg["search"]["trials"]
    teachers = _teachers(cfg)
    distilled = search_budget({**cfg, "search": {**cfg["search"], "trials": 0}}) - n
    groups = [Trainings(f"{what}: warmup", n)]
    if distilled:
        groups.append(Trainings(f"{what}: distillation", distilled, teachers=teachers, mode=d["teacher_mode"]))
    if search and m:
        groups.append(Trainings(f"{what}: search", m, teachers=teachers, mode=d["teacher_mode"]))
    return groups


def _retrains(cfg: dict, what: str, count: int, distilled: bool) -> list[Trainings]:
    """``count`` final-budget retrains, ``distilled`` ones with the run's final teachers (none without any)."""
    if count == 0:
        return []
    return [Trainings(what, count, size=retrain_size(cfg), teachers=_teachers(cfg) if distilled else 0,
                      mode=cfg["distill"]["teacher_mode"], retrain=True)]


def _with(cfg: dict, **sections: dict) -> dict:
    """``cfg`` with some keys of some sections changed: ``_with(cfg, warmup={"n": 5})``."""
    return {**cfg, **{name: {**cfg[name], **changes} for name, changes in sections.items()}}


def _table_4_1(exp: dict, cfg: dict, outliers: bool) -> list[Trainings]:
    """Every method's search (DCSOD also, with outliers, its warmup and distillation without them: the teachers of
    the retrain without outliers), then each row once per seed and retrain variant (without / with outliers)."""
    groups, budget, methods = [], search_budget(cfg), exp["methods"]
    for name in methods:
        if name != "dcsod":
            groups.append(Trainings(f"{name}: search", budget))
            continue
        groups += dcsod_run(cfg, "DCSOD")
        if outliers:
            groups += dcsod_run(cfg, "DCSOD without outliers", search=False)
    per_row = len(exp["seeds"]) * (2 if outliers else 1)
    plain_rows = len(exp["standard"]) + len([m for m in methods if m != "dcsod"])
    groups += _retrains(cfg, "retrains", plain_rows * per_row, distilled=False)
    return groups + _retrains(cfg, "DCSOD's retrains", per_row if "dcsod" in methods else 0, distilled=True)


def _table_4_2(exp: dict, cfg: dict) -> list[Trainings]:
    """The same n architectures trained twice, without and with outliers: warmup and distillation each."""
    n = exp["table_4_2"]["n"] or cfg["warmup"]["n"]
    settings = _with(cfg, warmup={"n": n})
    return dcsod_run(settings, "labels without outliers", search=False) + dcsod_run(settings, "labels with outliers",
                                                                                    search=False)


def _fig_4_3(exp: dict, cfg: dict) -> list[Trainings]:
    """A architectures × S seeds per objective: from scratch at the per-candidate budget, or (``noise.protocol:
    finetune``) OE and energy as fine-tunes of the CE networks for ``noise.finetune_epochs`` epochs on the same
    images (``pipelines.thesis.noise_study.fine_tuned``); ``distill`` first trains the pipeline's warmup for its
    teachers and runs them as the pipeline's ``train.teacher_mode`` says (the noise study trains with the warmup's
    settings, not with ``distill.teacher_mode``)."""
    from pipelines.thesis.noise_study import fine_tuned

    s, epochs = exp["noise"], train_config(cfg).epochs
    each = s["architectures"] * len(s["seeds"])
    groups = []
    for objective in s["objectives"]:
        if objective == "distill":
            n = cfg["warmup"]["n"]
            groups += [Trainings("noise: the teachers' warmup", n),
                       Trainings("noise: distill", each, teachers=ensemble_size(cfg["distill"], n),
                                 mode=train_config(cfg).teacher_mode)]
        elif fine_tuned(objective, s):
            groups.append(Trainings(f"noise: {objective}", each, size=s["finetune_epochs"] / epochs))
        else:
            groups.append(Trainings(f"noise: {objective}", each))
    return groups


def _variants(exp: dict, cfg: dict, runs: list[tuple[str, dict]], warmups: int) -> list[Trainings]:
    """Whole DCSOD runs (``(name, settings)``) sharing ``warmups`` warmups, each champion retrained per seed."""
    groups = []
    for name, settings in runs:
        groups += [g for g in dcsod_run(settings, name) if not g.what.endswith("warmup")]
        groups += _retrains(settings, f"{name}: retrains", len(exp["seeds"]), distilled=True)
    return [Trainings("shared warmups", warmups), *groups]


def _table_4_3(exp: dict, cfg: dict) -> list[Trainings]:
    """One DCSOD run per (λ, α, β) row; rows with λ = 0 share a CE warmup, the others the pipeline's warmup."""
    rows = exp["ablation"]["rows"]
    kinds = {"ce" if lam == 0 else cfg["warmup"]["objective"] for lam, _, _ in rows}
    return _variants(exp, cfg, [(f"λ={lam} α={alpha} β={beta}", cfg) for lam, alpha, beta in rows],
                     warmups=len(kinds) * cfg["warmup"]["n"])


def _fig_4_4(exp: dict, cfg: dict) -> list[Trainings]:
    """One DCSOD run per (N, I); runs with the same N share its warmup."""
    from pipelines.thesis.variants import tradeoff_combinations

    combos = tradeoff_combinations(exp, cfg)
    runs = [(f"N={n} I={i}", _with(cfg, warmup={"n": n}, distill={"iterations": i})) for n, i in combos]
    return _variants(exp, cfg, runs, warmups=sum(dict.fromkeys(n for n, _ in combos)))


def _champion(exp: dict, cfg: dict, figure: str) -> list[Trainings]:
    """DCSOD's run; Figure 4.5 retrains its champion once with CE and, when there are teachers, once distilled."""
    groups = dcsod_run(cfg, "DCSOD")
    if figure == "fig-4.5":
        groups += _retrains(cfg, "CE retrain", 1, distilled=False)
        groups += _retrains(cfg, "distilled retrain", 1 if cfg["distill"]["iterations"] else 0, distilled=True)
    return groups


def planned_trainings(command: str, exp: dict, cfg: dict, outliers: bool = True) -> list[Trainings]:
    """The trainings ``command`` runs with experiment settings ``exp`` and DCSOD settings ``cfg`` (a rerun trains
    only what is missing); ``outliers``: whether the protocol has auxiliary outliers (Table 4.1's retrains with
    outliers and DCSOD's chain without them exist only then; :func:`expects_outliers`)."""
    if command == "table-4.1":
        return _table_4_1(exp, cfg, outliers)
    if command == "table-4.2":
        return _table_4_2(exp, cfg)
    if command == "fig-4.3":
        return _fig_4_3(exp, cfg)
    if command == "table-4.3":
        return _table_4_3(exp, cfg)
    if command == "fig-4.4":
        return _fig_4_4(exp, cfg)
    if command in ("fig-4.5", "fig-4.6"):
        return _champion(exp, cfg, command)
    raise ValueError(f"command: unknown {command!r}")


def expects_outliers(cfg: dict) -> tuple[bool, str]:
    """Whether the run will have auxiliary outliers, read from the settings without loading any data, and why:
    a protocol option ``aux_path`` (a user-supplied outlier folder) or ``aux_classes`` that is null or empty means
    none; otherwise the protocol's own outliers are assumed (the digits and CIFAR-10 class splits have them)."""
    options = cfg["protocol_options"]
    for key in ("aux_path", "aux_classes"):
        if key in options:
            value = options[key]
            return bool(value), f"dcsod.protocol_options.{key} is {'null' if value is None else repr(value)}"
    return True, f"assumed: the {cfg['protocol']} protocol's own outlier classes"


@dataclass(frozen=True)
class CandidateSeconds:
    """One candidate's ``seconds`` at the pipeline's ``batch_size`` on ``device``; ``source``: "measured here:
    FILE, DEVICE, DATE" or "not measured, assumed: ..."; ``scaling``: how a figure taken at another batch size was
    scaled ("" if it was not)."""

    seconds: float
    batch_size: int
    device: str
    source: str
    scaling: str = ""


def candidate_seconds(spec: dict | None, batch_size: int) -> CandidateSeconds | None:
    """The preset's ``seconds_per_candidate`` (validated by ``pipelines.thesis.settings``) at ``batch_size``, the
    batch the pipeline trains with; None without a figure."""
    if spec is None:
        return None
    figure, taken_at, device = spec["seconds"], spec.get("batch_size") or batch_size, spec["device"]
    measured = spec.get("measured")
    source = (f"measured here: {measured['file']}, {device}, {measured['date']}" if measured
              else f"not measured, assumed: {spec['assumed']}")
    if taken_at == batch_size:
        return CandidateSeconds(figure, batch_size, device, source)
    seconds = figure * taken_at / batch_size
    scaling = (f"the figure is {figure:g} s at batch {taken_at}, scaled to batch {batch_size} by SGD steps per epoch, "
               f"× {taken_at}/{batch_size} (assumed: a step costs the same at either batch size, as a launch-bound "
               "one does)")
    return CandidateSeconds(seconds, batch_size, device, source, scaling)


def _split(groups: list[Trainings]) -> str:
    """``"26,300 without teachers, 6,100 with 11 teachers online"``."""
    parts: dict[str, int] = {}
    for g in groups:
        key = f"with {g.teachers} teachers {g.mode}" if g.teachers else "without teachers"
        parts[key] = parts.get(key, 0) + g.count
    return ", ".join(f"{n:,} {key}" for key, n in sorted(parts.items(), key=lambda kv: kv[0] != "without teachers"))


def plan_lines(command: str, exp: dict, cfg: dict) -> list[str]:
    """What ``command`` will train and, with ``seconds_per_candidate``, cost; each figure with its source."""
    outliers, why = expects_outliers(cfg)
    groups = planned_trainings(command, exp, cfg, outliers)
    candidates = [g for g in groups if not g.retrain]
    retrains = [g for g in groups if g.retrain]
    train = train_config(cfg)
    lines = [f"{command} (preset {exp['preset']}, DCSOD settings {exp['pipeline']}): "
             f"{sum(g.count for g in candidates):,} candidate trainings and {sum(g.count for g in retrains):,} "
             f"final-budget retrains, counted {'with' if outliers else 'without'} auxiliary outliers ({why})",
             f"  candidates: {train.epochs} epochs on {cfg['search_fraction']:.0%} of the ID training images at batch "
             f"{train.batch_size}: {_split(candidates)}"]
    shorter = [g for g in candidates if g.size != 1]
    if shorter:
        lines.append("  of them fine-tunes of the CE networks: " + ", ".join(
            f"{g.count:,} {g.what.split(': ')[-1]} ({g.size:g} candidates each)" for g in shorter))
    if retrains:
        lines.append(f"  retrains: {cfg['final']['epochs']} epochs on all of them, {retrain_size(cfg):g} candidates "
                     f"each (validation images not counted): {_split(retrains)}")
    online = sorted({g.online for g in groups if g.online})
    if online:
        lines.append(f"  teachers online: each teacher runs forward on every batch, counted as 1/{1 / FORWARD_SHARE:g} "
                     "of a training step (assumed, not measured): a training with "
                     + ", ".join(f"{e} teachers costs {1 + e * FORWARD_SHARE:.2f}" for e in online)
                     + " times one without")
    if any(g.teachers and g.mode == "cached" for g in groups):
        lines.append("  teachers cached: the ensemble runs once per worker over the training images, not costed")
    seconds = candidate_seconds(exp["seconds_per_candidate"], train.batch_size)
    if seconds is None:
        lines.append("  seconds per candidate: none given (seconds_per_candidate: null in "
                     "pipelines/presets/experiments.yaml), so no time estimate")
        return lines
    total = sum(g.candidates for g in groups)
    lines.append(f"  seconds per candidate: {seconds.seconds:g} s on {seconds.device} at batch {seconds.batch_size}, "
                 f"{seconds.source}")
    if seconds.scaling:
        lines.append(f"    {seconds.scaling}")
    lines += [
              f"  estimate: {total:,.0f} candidates' worth × {seconds.seconds:g} s = "
              f"{total * seconds.seconds / 3600:,.0f} hours on {seconds.device}, one training at a time (not counted: "
              "the standard architectures' extra depth, Ray and data start-up, trainings sharing a device)"]
    return lines
