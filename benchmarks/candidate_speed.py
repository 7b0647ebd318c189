"""Seconds per candidate: a plain PyTorch reference loop against the project's fast path.

(a) reference: fp32, torchvision transforms in a ``torch.utils.data.DataLoader`` over the uint8 images,
    batch 128, one model at a time, cross-entropy.
(b) fast path: ``trainables.train_candidate`` (device-resident uint8 data, on-device augmentation,
    channels_last, bf16 autocast on CUDA, optional larger batch), ``--workers`` processes training candidates
    concurrently on the same device, each holding the data once. Amortised time = wall time / candidates.

Both use the same architectures, images, epochs and objective (cross-entropy) in the same run and print
test accuracy and MSP AUROC next to the timings. Budget of the paper: ``--epochs 20 --images 25000``.

    python benchmarks/candidate_speed.py --data ../shared/data/cifar10-train-jpeg.zip            # GPU, paper budget
    python benchmarks/candidate_speed.py --data ... --images 1024 --epochs 1 --eval-images 500 \
        --workers 1 --repeats 2 --device cpu --loader-workers 0                                # CPU variant
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time

import torch


def build_protocol(data: str | None, images: int, seed: int, eval_images: int | None = None):
    from trainables import make_protocol

    if data:
        p = make_protocol("cifar10-split", path=data, id_fractions=(10, 1, 1), seed=seed, train_limit=images)
    else:  # synthetic CIFAR-shaped images: timings only, metrics meaningless
        from trainables.data import LabelledImages, class_split

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


# --- (a) reference ---------------------------------------------------------------------------------

class UInt8Images(torch.utils.data.Dataset):
    def __init__(self, images, labels, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.transform(self.images[i]), self.labels[i]


def reference_train(genotype_json: str, protocol, epochs: int, width: int, device: torch.device, seed: int,
                    loader_workers: int) -> dict:
    from torchvision.transforms import v2

    from search_space import Genotype, build_network
    from trainables.ood import evaluate_ood

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
    model.train()
    for _ in range(epochs):
        for xb, yb in loader:
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            loss = torch.nn.functional.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    sync()
    seconds = time.perf_counter() - start
    norm = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean.tolist(), std.tolist())])

    def put(t):
        return norm(t).to(device)

    metrics = evaluate_ood(model, put(protocol.id_test[0]), protocol.id_test[1].to(device), put(protocol.ood["test"]),
                           put(x), y.to(device), scores=("msp",))
    return {"seconds": seconds, "wall": time.perf_counter() - wall_start, "id_acc": metrics["id_acc"],
            "auroc_msp": metrics["auroc_msp"]}


# --- (b) fast path ---------------------------------------------------------------------------------

def _fast_setup(args):
    from trainables import DeviceData, TrainConfig

    torch.backends.cudnn.benchmark = True
    protocol = build_protocol(args.data, args.images, args.seed, args.eval_images)
    lr = 0.1 * args.fast_batch / 128
    base = TrainConfig(epochs=args.epochs, batch_size=args.fast_batch, lr=lr, width=args.width, objective="ce",
                       device=args.device, scores=("msp",), eval_split="test", compile=args.compile,
                       compile_mode=args.compile_mode,
                       channels_last=args.channels_last)
    return DeviceData(protocol, args.device), base


def _fast_job(data, base, job) -> dict:
    from trainables import train_candidate

    name, genotype, seed = job
    start = time.perf_counter()
    r = train_candidate(genotype, data, base.replace(seed=seed))
    return {"arch": name, "seconds": r["train_seconds"], "wall": time.perf_counter() - start,
            "id_acc": r["id_acc"], "auroc_msp": r["auroc_msp"]}


def _fast_worker(rank, args, jobs, results, ready, go):
    if args.device == "cpu":
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // args.workers))
    data, base = _fast_setup(args)
    ready.put(rank)
    go.wait()
    while (job := jobs.get()) is not None:
        results.put(_fast_job(data, base, job))


def fast_path(args, archs: dict[str, str]) -> tuple[float, list[dict]]:
    """Run ``repeats`` copies of every architecture over ``workers`` processes (in this process when
    ``workers == 1``); (wall seconds, results)."""
    jobs_list = [(name, g, args.seed + rep) for rep in range(args.repeats) for name, g in archs.items()]
    if args.workers == 1:
        data, base = _fast_setup(args)
        start = time.perf_counter()
        out = [_fast_job(data, base, job) for job in jobs_list]
        return time.perf_counter() - start, out
    ctx = torch.multiprocessing.get_context("spawn")
    jobs, results, ready, go = ctx.Queue(), ctx.Queue(), ctx.Queue(), ctx.Event()
    procs = [ctx.Process(target=_fast_worker, args=(r, args, jobs, results, ready, go)) for r in range(args.workers)]
    for p in procs:
        p.start()
    for _ in procs:
        ready.get()  # data loaded and on the device in every worker: not part of the timing
    for job in jobs_list:
        jobs.put(job)
    count = len(jobs_list)
    for _ in procs:
        jobs.put(None)
    start = time.perf_counter()
    go.set()
    out = [results.get() for _ in range(count)]
    wall = time.perf_counter() - start
    for p in procs:
        p.join()
    return wall, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="CIFAR-10 ImageFolder zip/dir (default: synthetic images)")
    parser.add_argument("--images", type=int, default=25000)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--workers", type=int, default=4, help="concurrent fast-path processes on the device")
    parser.add_argument("--repeats", type=int, default=None, help="copies of each architecture (default: workers)")
    parser.add_argument("--fast-batch", type=int, default=128, help="fast-path batch (lr scaled by batch/128)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the fast-path model")
    parser.add_argument("--compile-mode", default="default",
                        help="torch.compile mode; reduce-overhead = CUDA graphs (see TrainConfig.compile_mode)")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True,
                        help="NHWC activations in the fast path (default on)")
    parser.add_argument("--loader-workers", type=int, default=4, help="DataLoader workers of the reference")
    parser.add_argument("--eval-images", type=int, default=None, help="cap ID/OOD test sets (CPU runs)")
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--archs", nargs="+", default=["k6-median", "k8-large"],
                        help="which of the two architectures to train (both by default)")
    args = parser.parse_args()
    args.repeats = args.repeats or args.workers
    device = torch.device(args.device)
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU x{os.cpu_count()}"
    print(f"# {card}, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}, {args.images} images x {args.epochs} "
          f"epochs, width {args.width}, data {'CIFAR-10 split' if args.data else 'synthetic'}")
    archs = architectures(args.seed)
    unknown = set(args.archs) - set(archs)
    if unknown:
        parser.error(f"--archs: unknown {sorted(unknown)}; choose from {', '.join(archs)}")
    archs = {name: g for name, g in archs.items() if name in args.archs}
    rows = []
    if not args.skip_reference:
        protocol = build_protocol(args.data, args.images, args.seed, args.eval_images)
        for name, g in archs.items():
            r = reference_train(g, protocol, args.epochs, args.width, device, args.seed, args.loader_workers)
            rows.append({"path": "reference", "arch": name, **r})
            print(json.dumps(rows[-1]), flush=True)
    wall, fast = fast_path(args, archs)
    per_arch = {}
    for name in archs:
        mine = [r for r in fast if r["arch"] == name]
        per_arch[name] = {
            "seconds": statistics.median(r["seconds"] for r in mine),
            "wall": statistics.median(r["wall"] for r in mine),
            "id_acc": statistics.mean(r["id_acc"] for r in mine),
            "auroc_msp": statistics.mean(r["auroc_msp"] for r in mine),
        }
        rows.append({"path": f"fast x{args.workers}", "arch": name, **per_arch[name]})
        print(json.dumps(rows[-1]), flush=True)
    amortised = wall / len(fast)
    print(f"\n{'path':<12} {'arch':<10} {'train s':>8} {'wall s':>8} {'id_acc':>7} {'auroc':>7}")
    for r in rows:
        print(f"{r['path']:<12} {r['arch']:<10} {r['seconds']:8.1f} {r['wall']:8.1f} {r['id_acc']:7.3f} "
              f"{r['auroc_msp']:7.3f}")
    print(f"fast path: {len(fast)} candidates in {wall:.1f} s wall on {args.workers} workers = {amortised:.2f} s "
          "amortised per candidate (training + evaluation)")
    if not args.skip_reference:
        ref = [r for r in rows if r["path"] == "reference"]
        ref_wall = statistics.mean(r["wall"] for r in ref)
        ref_train = statistics.mean(r["seconds"] for r in ref)
        fast_train = statistics.mean(per_arch[n]["seconds"] for n in archs)
        print(f"reference mean {ref_train:.1f} s training, {ref_wall:.1f} s with evaluation per candidate")
        print(f"speedup_train_loop={ref_train / fast_train:.2f}  speedup_amortised={ref_wall / amortised:.2f}")


if __name__ == "__main__":
    main()
