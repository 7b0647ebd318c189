"""Seconds per candidate: a plain fp32 PyTorch loop against the project's fast path, side by side in one call.

(a) plain: fp32, torchvision transforms in a ``torch.utils.data.DataLoader`` over the uint8 images, batch 128,
    one model at a time, cross-entropy; the usual eager loop (foreach SGD, ``LambdaLR``).
(b) fast path: ``trainables.image.train_candidate`` (device-resident uint8 data, on-device crop/flip, channels_last,
    bf16 autocast on CUDA, a larger batch with the lr scaled by batch/128, and on CUDA the whole step captured as
    one CUDA graph per candidate: ``TrainConfig.cuda_graph``), in N worker processes training candidates
    concurrently on the same device, for every N of ``--workers`` (default 1 2 4 8).

Both train the same architecture on the same images with the same objective (cross-entropy). The workers are
started once, each holds the data on the device and first trains one short warm-up candidate (process start,
CUDA context, cuDNN autotuning: costs a reused Ray Tune actor pays once, not per candidate); then, per N, the
first N workers each train ``--repeats`` candidates at once. Every candidate is built and (with
``cuda_graph``) captured anew, so the per-candidate capture is inside the timings. The plain loop is warmed up the
same way (one short run) before its timed candidate.

Timings are per epoch (from each candidate's curve), measured over ``--epochs`` epochs and extrapolated to
``--target-epochs`` (the paper: 20 × 25,000 images): steady epoch = median of the epochs after the first (the
first holds the capture); seconds per candidate = (measured wall, set-up and evaluation included, + (target −
measured) epochs × steady epoch × repeats) / candidates; throughput = concurrent candidates × images per
epoch / steady epoch. Each row is printed and appended to ``--jsonl`` as soon as it is measured;
``--summary FILE...`` turns such files into one markdown table (ratio to the plain loop, where throughput stops
rising, the goal of ≤ 10 s and ≥ 10× the plain loop).

    python benchmarks/candidate_speed.py --data data/cifar10-train-jpeg.zip --epochs 3 --archs k6-median \\
        --workers 1 2 4 8 --fast-batch 512 --jsonl out.jsonl                               # GPU: plain + fast
    python benchmarks/candidate_speed.py --summary out.jsonl                                 # the table
    python benchmarks/candidate_speed.py --data ... --images 1024 --epochs 2 --eval-images 500 \\
        --workers 1 --device cpu --loader-workers 0                                          # CPU variant
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import queue
import statistics
import sys
import time

import torch

GOAL_SECONDS, GOAL_RATIO = 10.0, 10.0  # issue 20: a median candidate at the paper budget


def build_protocol(data: str | None, images: int, seed: int, eval_images: int | None = None):
    from trainables.image import make_protocol

    if data:
        p = make_protocol("cifar10-split", path=data, id_fractions=(10, 1, 1), seed=seed, train_limit=images)
    else:  # synthetic CIFAR-shaped images: timings only, metrics meaningless
        from trainables.image.data import LabelledImages, class_split

        g = torch.Generator().manual_seed(seed)
        n = 2 * images
        x = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8).numpy()
        y = torch.randint(0, 10, (n,), generator=g).numpy()
        p = class_split(LabelledImages(x, y, tuple(map(str, range(10)))), "synthetic", list("012345"), list("67"),
                        list("89"), id_fractions=(10, 1, 1), seed=seed, train_limit=images)
    if eval_images:  # random subsets of the test sets for slow devices (parts are sorted by class)
        g = torch.Generator().manual_seed(seed)
        keep = torch.randperm(len(p.id_test[1]), generator=g)[:eval_images]
        p.id_test = (p.id_test[0][keep], p.id_test[1][keep])
        p.ood = {k: v[torch.randperm(len(v), generator=g)[:eval_images]] for k, v in p.ood.items()}
    return p


def architectures(seed: int) -> dict[str, str]:
    """One median-sized K=6 genotype and one larger K=8 one (by live operators), as JSON."""
    from search_space import SearchSpace

    def pick(k: int, quantile: float) -> str:
        pool = SearchSpace(k=k).sample_many(21, seed=seed)
        pool.sort(key=lambda g: sum(len(c.live) for c in g.cells))
        return pool[int(quantile * (len(pool) - 1))].to_json()

    return {"k6-median": pick(6, 0.5), "k8-large": pick(8, 0.75)}


def steady_epoch(epoch_seconds: list[float]) -> float:
    """Seconds of a steady-state epoch: the median of the epochs after the first (which holds the one-off
    costs: CUDA-graph capture, cuDNN autotuning, DataLoader start), or the first if it is the only one."""
    if not epoch_seconds:
        raise ValueError("epoch_seconds: expected at least one epoch")
    return statistics.median(epoch_seconds[1:] or epoch_seconds)


def extrapolated_seconds(wall: float, steady: float, epochs: int, target: int, repeats: int, candidates: int) -> float:
    """Amortised seconds per candidate at ``target`` epochs: the measured ``wall`` (``repeats`` sequential
    candidates of ``epochs`` epochs per worker, ``candidates`` in all) plus the missing epochs at ``steady``
    seconds each, divided by ``candidates``."""
    if target < epochs:
        raise ValueError(f"target_epochs: expected >= the measured epochs ({epochs}), got {target}")
    return (wall + repeats * (target - epochs) * steady) / candidates


# --- (a) plain fp32 loop ---------------------------------------------------------------------------

class UInt8Images(torch.utils.data.Dataset):
    def __init__(self, images, labels, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.transform(self.images[i]), self.labels[i]


def reference_train(genotype_json: str, protocol, epochs: int, width: int, device: torch.device, seed: int,
                    loader_workers: int) -> dict:
    """One candidate through the plain loop; seconds of training, wall (DataLoader and model set-up and
    evaluation included), per-epoch seconds, images per epoch, id_acc and MSP AUROC."""
    from torchvision.transforms import v2

    from search_space import Genotype, build_network
    from trainables.image.ood import evaluate_ood

    wall_start = time.perf_counter()
    torch.manual_seed(seed)
    mean, std = protocol.mean_std()
    transform = v2.Compose([v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip(),
                            v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean.tolist(), std.tolist())])
    x, y = protocol.id_train
    loader = torch.utils.data.DataLoader(UInt8Images(x, y, transform), batch_size=128, shuffle=True, drop_last=True,
                                         num_workers=loader_workers, pin_memory=device.type == "cuda",
                                         persistent_workers=loader_workers > 0)
    model = build_network(Genotype.from_json(genotype_json), protocol.num_classes, 3, width).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    total = epochs * len(loader)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / total)))
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    epoch_seconds = []
    model.train()
    for _ in range(epochs):
        epoch_start = time.perf_counter()
        for xb, yb in loader:
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            loss = torch.nn.functional.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        sync()
        epoch_seconds.append(time.perf_counter() - epoch_start)
    seconds = time.perf_counter() - start
    norm = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean.tolist(), std.tolist())])

    def put(t):
        return norm(t).to(device)

    metrics = evaluate_ood(model, put(protocol.id_test[0]), protocol.id_test[1].to(device), put(protocol.ood["test"]),
                           put(x), y.to(device), scores=("msp",))
    return {"seconds": seconds, "wall": time.perf_counter() - wall_start, "epoch_seconds": epoch_seconds,
            "images_per_epoch": len(loader) * 128, "id_acc": metrics["id_acc"], "auroc_msp": metrics["auroc_msp"]}


def reference_row(args, protocol, name: str, genotype: str) -> dict:
    """The plain loop's row: a warm-up run (1 epoch on 2,048 images) and then one timed candidate."""
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.zeros(1, device=device)  # the CUDA context, as every worker has one before its timings
    small = dataclasses.replace(protocol, id_train=tuple(t[:2048] for t in protocol.id_train))
    reference_train(genotype, small, 1, args.width, device, args.seed, args.loader_workers)
    r = reference_train(genotype, protocol, args.epochs, args.width, device, args.seed, args.loader_workers)
    steady = steady_epoch(r["epoch_seconds"])
    return {"path": "plain fp32", "workers": 1, "arch": name, "candidates": 1, "batch": 128,
            "wall_s": r["wall"], "train_s": r["seconds"], "first_epoch_s": r["epoch_seconds"][0], "epoch_s": steady,
            "images_per_epoch": r["images_per_epoch"], "images_per_s": r["images_per_epoch"] / steady,
            "amortised_s": extrapolated_seconds(r["wall"], steady, args.epochs, args.target_epochs, 1, 1),
            "id_acc": r["id_acc"], "auroc_msp": r["auroc_msp"]}


# --- (b) fast path ---------------------------------------------------------------------------------

def fast_config(args):
    from trainables.image import TrainConfig

    return TrainConfig(epochs=args.epochs, batch_size=args.fast_batch, lr=0.1 * args.fast_batch / 128,
                       width=args.width, objective="ce", device=args.device, scores=("msp",), eval_split="test",
                       compile=args.compile, compile_mode=args.compile_mode, channels_last=args.channels_last,
                       cuda_graph=args.cuda_graph)


def fast_label(args) -> str:
    precision = "bf16" if torch.device(args.device).type == "cuda" else "fp32"
    how = "CUDA graph" if args.cuda_graph else (f"compile {args.compile_mode}" if args.compile else "eager")
    return f"fast ({how}, {precision}, batch {args.fast_batch})"


def _fast_job(data, base, job) -> dict:
    from trainables.image import train_candidate

    name, genotype, seed = job
    start = time.perf_counter()
    r = train_candidate(genotype, data, base.replace(seed=seed))
    steps = len(data.train_y) // base.batch_size
    return {"arch": name, "seconds": r["train_seconds"], "wall": time.perf_counter() - start,
            "eval_s": r["eval_seconds"], "epoch_seconds": [e["epoch_seconds"] for e in r["curve"]],
            "images_per_epoch": steps * min(base.batch_size, len(data.train_y)), "id_acc": r["id_acc"],
            "auroc_msp": r["auroc_msp"]}


def _fast_worker(rank, args, protocol, genotype, tasks, results):
    """A worker process: data on the device, one warm-up candidate, then jobs from ``tasks`` until None.
    Any error is sent back as ``{"error": ...}``."""
    try:
        from trainables.image import DeviceData

        if torch.device(args.device).type == "cpu":
            torch.set_num_threads(args.threads or max(1, (os.cpu_count() or 1) // max(args.workers)))
        torch.backends.cudnn.benchmark = True
        data, base = DeviceData(protocol, args.device), fast_config(args)
        warm = min(1.0, 4 * args.fast_batch / len(data.train_y))
        _fast_job(data, base.replace(epochs=1, train_fraction=warm), ("warm-up", genotype, args.seed + 10_000))
        results.put({"ready": rank})
        while (job := tasks.get()) is not None:
            results.put(_fast_job(data, base, job))
    except Exception as e:  # the parent stops the benchmark with this line
        results.put({"error": f"worker {rank}: {type(e).__name__}: {e}"})


def _collect(results, procs, count: int, deadline: float) -> list[dict]:
    """``count`` messages from the workers; RuntimeError on a worker's error, a dead worker or the deadline."""
    out = []
    while len(out) < count:
        try:
            msg = results.get(timeout=1.0)
        except queue.Empty:
            if time.monotonic() > deadline:
                raise RuntimeError(f"phase timeout: {len(out)} of {count} results") from None
            dead = [i for i, p in enumerate(procs) if not p.is_alive()]
            if dead:
                raise RuntimeError(f"worker(s) {dead} died (exit {procs[dead[0]].exitcode})") from None
            continue
        if "error" in msg:
            raise RuntimeError(msg["error"])
        out.append(msg)
    return out


def phase_row(args, name: str, n: int, wall: float, jobs: list[dict]) -> dict:
    """One row for ``n`` concurrent workers from their candidates' results and the phase's wall seconds."""
    steady = statistics.median(steady_epoch(j["epoch_seconds"]) for j in jobs)
    per_epoch = jobs[0]["images_per_epoch"]
    return {"path": fast_label(args), "workers": n, "arch": name, "candidates": len(jobs), "batch": args.fast_batch,
            "wall_s": wall, "train_s": statistics.median(j["seconds"] for j in jobs),
            "first_epoch_s": statistics.median(j["epoch_seconds"][0] for j in jobs), "epoch_s": steady,
            "eval_s": statistics.median(j["eval_s"] for j in jobs), "images_per_epoch": per_epoch,
            "images_per_s": n * per_epoch / steady,
            "amortised_s": extrapolated_seconds(wall, steady, args.epochs, args.target_epochs, args.repeats, len(jobs)),
            "id_acc": statistics.mean(j["id_acc"] for j in jobs),
            "auroc_msp": statistics.mean(j["auroc_msp"] for j in jobs)}


def fast_rows(args, protocol, name: str, genotype: str, emit) -> None:
    """Start ``max(workers)`` worker processes once, then per N of ``args.workers`` let the first N train
    ``repeats`` candidates each at once; ``emit`` gets each N's row as soon as it is measured."""
    ctx = torch.multiprocessing.get_context("spawn")
    results = ctx.Queue()
    tasks = [ctx.Queue() for _ in range(max(args.workers))]
    procs = [ctx.Process(target=_fast_worker, args=(r, args, protocol, genotype, tasks[r], results), daemon=True)
             for r in range(len(tasks))]
    for p in procs:
        p.start()
    try:
        _collect(results, procs, len(procs), time.monotonic() + args.start_timeout)  # all warmed up
        for n in args.workers:
            start = time.perf_counter()
            for rank in range(n):
                for rep in range(args.repeats):
                    tasks[rank].put((name, genotype, args.seed + rank * args.repeats + rep))
            jobs = _collect(results, procs, n * args.repeats, time.monotonic() + args.phase_timeout)
            emit(phase_row(args, name, n, time.perf_counter() - start, jobs))
        for t in tasks:
            t.put(None)
        for p in procs:
            p.join(timeout=30)
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()


# --- summary ---------------------------------------------------------------------------------------

def saturation(rows: list[dict]) -> str:
    """Where a path's throughput stops rising: the first worker count whose next one adds < 5 % (rows of the
    same worker count are averaged)."""
    by_workers: dict[int, list[float]] = {}
    for r in rows:
        by_workers.setdefault(r["workers"], []).append(r["images_per_s"])
    rows = [{"workers": n, "images_per_s": statistics.mean(v)} for n, v in sorted(by_workers.items())]
    for a, b in zip(rows, rows[1:]):
        if b["images_per_s"] < 1.05 * a["images_per_s"]:
            gain = 100 * (b["images_per_s"] / a["images_per_s"] - 1)
            return (f"throughput stops rising at {a['workers']} worker(s): {b['workers']} give {gain:+.0f} % "
                    f"({a['images_per_s']:,.0f} -> {b['images_per_s']:,.0f} images/s)")
    last = rows[-1]
    return f"throughput still rising at {last['workers']} worker(s) ({last['images_per_s']:,.0f} images/s)"


def summary(rows: list[dict]) -> str:
    """The markdown table of a run's rows (plain loop first), with the ratio to the plain loop, the saturation
    point of every fast path and the goal's verdict."""
    if not rows:
        raise ValueError("summary: no rows")
    meta = rows[0]
    target = meta["target_epochs"]
    plain = next((r for r in rows if r["path"] == "plain fp32"), None)
    lines = [f"# Seconds per candidate: {meta['device']}, torch {meta['torch']}, {meta['date']}",
             "",
             f"{meta['arch']}, width {meta['width']}, {meta['images']} training images, data {meta['data']}; "
             f"measured over {meta['epochs']} epochs and **extrapolated to {target}** (steady epoch = median of the "
             "epochs after the first; the measured wall, set-up, capture and evaluation included, + the missing "
             "epochs at the steady rate).",
             "",
             f"| path | workers | candidates | steady epoch s | images/s | s/candidate at {target} epochs "
             "(extrapolated) | x plain fp32 | id_acc | AUROC (MSP) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = f"{plain['amortised_s'] / r['amortised_s']:.1f}" if plain else "-"
        lines.append(f"| {r['path']} | {r['workers']} | {r['candidates']} | {r['epoch_s']:.3f} | "
                     f"{r['images_per_s']:,.0f} | {r['amortised_s']:.2f} | {ratio} | {r['id_acc']:.3f} | "
                     f"{r['auroc_msp']:.3f} |")
    lines.append("")
    fast = [r for r in rows if r["path"] != "plain fp32"]
    for path in dict.fromkeys(r["path"] for r in fast):
        mine = [r for r in fast if r["path"] == path]
        if len(mine) > 1:
            lines.append(f"- {path}: {saturation(mine)}.")
    if fast:
        best = min(fast, key=lambda r: r["amortised_s"])
        goal = f"goal <= {GOAL_SECONDS:.0f} s and >= {GOAL_RATIO:.0f}x the plain fp32 loop"
        if plain:
            ratio = plain["amortised_s"] / best["amortised_s"]
            met = best["amortised_s"] <= GOAL_SECONDS and ratio >= GOAL_RATIO
            verdict = f"{ratio:.1f}x the plain fp32 loop ({goal}: {'met' if met else 'not met'})"
        else:
            verdict = f"no plain fp32 row to compare with ({goal}: not judged)"
        lines.append(f"- Best: {best['path']} at {best['workers']} worker(s), {best['amortised_s']:.2f} s per "
                     f"candidate, {verdict}.")
    return "\n".join(lines)


def read_rows(paths: list[str]) -> list[dict]:
    rows = []
    for path in paths:
        with open(path) as f:
            rows += [json.loads(line) for line in f if line.strip()]
    return sorted(rows, key=lambda r: (r["path"] != "plain fp32", r["path"], r["workers"]))


# --- command line ----------------------------------------------------------------------------------

def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="CIFAR-10 ImageFolder zip/dir (default: synthetic images)")
    parser.add_argument("--images", type=int, default=25000, help="training images per candidate")
    parser.add_argument("--epochs", type=int, default=3, help="epochs measured per candidate")
    parser.add_argument("--target-epochs", type=int, default=20, help="epochs the seconds are extrapolated to")
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8],
                        help="concurrent fast-path worker processes on the device, one measurement per value")
    parser.add_argument("--repeats", type=int, default=1, help="candidates per worker per measurement")
    parser.add_argument("--fast-batch", type=int, default=512, help="fast-path batch (lr scaled by batch/128)")
    parser.add_argument("--cuda-graph", action=argparse.BooleanOptionalAction, default=None,
                        help="capture the fast path's step as a CUDA graph (default: on for CUDA devices)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the fast-path model (no --cuda-graph)")
    parser.add_argument("--compile-mode", default="default", help="torch.compile mode (see TrainConfig.compile_mode)")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True,
                        help="NHWC activations in the fast path (default on)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads per fast-path worker on a CPU device (default: cores / max workers)")
    parser.add_argument("--loader-workers", type=int, default=4, help="DataLoader workers of the plain loop")
    parser.add_argument("--eval-images", type=int, default=None, help="cap ID/OOD test sets (CPU runs)")
    parser.add_argument("--skip-reference", action="store_true", help="no plain-loop row")
    parser.add_argument("--skip-fast", action="store_true", help="no fast-path rows")
    parser.add_argument("--start-timeout", type=float, default=600.0,
                        help="seconds for the workers to start and train their warm-up candidates")
    parser.add_argument("--phase-timeout", type=float, default=600.0, help="seconds for one measurement")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--archs", nargs="+", default=["k6-median"], choices=["k6-median", "k8-large"])
    parser.add_argument("--jsonl", default=None, help="append every row to this file")
    parser.add_argument("--summary", nargs="+", metavar="JSONL", help="print the table of these files and exit")
    args = parser.parse_args(argv)
    if args.summary:
        return args
    if args.cuda_graph is None:
        args.cuda_graph = torch.device(args.device).type == "cuda" and not args.compile
    bad = [(args.epochs >= 1, "--epochs: expected >= 1"),
           (args.target_epochs >= args.epochs, "--target-epochs: expected >= --epochs"),
           (min(args.workers) >= 1 and args.repeats >= 1, "--workers/--repeats: expected >= 1"),
           (not (args.cuda_graph and args.compile), "--cuda-graph and --compile: choose one")]
    for ok, message in bad:
        if not ok:
            parser.error(message)
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.summary:
        try:
            print(summary(read_rows(args.summary)))
        except (OSError, ValueError) as e:
            sys.exit(f"error: {e}")
        return
    device = torch.device(args.device)
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU x{os.cpu_count()}"
    meta = {"device": card, "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"), "images": args.images,
            "epochs": args.epochs, "target_epochs": args.target_epochs, "width": args.width,
            "data": "CIFAR-10 split" if args.data else "synthetic"}
    print(f"# {card}, torch {torch.__version__}, {meta['date']}, {args.images} images x {args.epochs} epochs "
          f"(extrapolated to {args.target_epochs}), width {args.width}, data {meta['data']}", flush=True)

    def emit(row: dict) -> None:
        row = {**meta, **row}
        print(json.dumps(row), flush=True)
        if args.jsonl:
            with open(args.jsonl, "a") as f:
                f.write(json.dumps(row) + "\n")

    archs = architectures(args.seed)
    protocol = build_protocol(args.data, args.images, args.seed, args.eval_images)
    try:
        for name in args.archs:
            if not args.skip_reference:
                emit(reference_row(args, protocol, name, archs[name]))
            if not args.skip_fast:
                fast_rows(args, protocol, name, archs[name], emit)
    except RuntimeError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
