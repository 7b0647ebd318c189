"""Budget study for the text VAE on real text: when do the β schedules separate?

Trains an LSTM VAE (Gaussian posterior, no aggressive training) on PTB (``ptb``: with only ``valid.txt`` and
``test.txt`` present they are pooled and split by a seeded permutation) or Yelp, once per schedule (constant,
monotonic R = 0.25, cyclical M = 4, R = 0.5) × model size × word dropout, and records after every epoch the
validation KL and mutual information I(x, z) (nats per sentence), the validation ELBO and the training tokens/s.
Each training is one process with one thread; ``--jobs`` run at once.

Outputs under ``--output``: ``budget.parquet`` (one row per training and epoch), ``budget.md`` (the final epoch
per training, and per size/dropout the first epoch at which the cyclical run's validation KL exceeds the
monotonic and constant ones' by more than ``--margin`` nats) and ``budget.png`` (KL and MI against iteration,
one panel per size/dropout, one line per schedule).

    OMP_NUM_THREADS=1 python benchmarks/text_vae_budget.py --dataset ptb --epochs 12 --hidden 128 256 \
        --dropout 0 0.4 --output /tmp/tv-budget
"""
from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd

SCHEDULES = ("constant", "monotonic", "cyclical")


def data_dir(arg: str | None) -> Path:
    return Path(arg or os.environ.get("DCSOD_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data")


def train_one(job: dict) -> list[dict]:
    """One training (in a worker process): its per-epoch rows."""
    import torch

    from trainables.text.data import load_text_data
    from trainables.text.vae_model import VAEModelConfig, VAETrainConfig, train_vae

    torch.set_num_threads(1)
    options = {"max_len": job["max_len"], "min_freq": 2, "val_frac": 0.1, "test_frac": 0.1, "seed": 0}
    if job["dataset"] == "yelp":
        options["limit"] = job["limit"]
    data = load_text_data(job["dataset"], job["data_dir"], **options)
    model_cfg = VAEModelConfig(emb_dim=job["emb"], hidden_dim=job["hidden"], latent_dim=32,
                               posterior="gaussian", word_dropout=job["dropout"])
    cfg = VAETrainConfig(epochs=job["epochs"], batch_size=32, lr=1e-3, schedule=job["schedule"], cycles=4,
                         ratio=0.5, monotonic_ratio=0.25, iw_samples=0, mi_rows=job["mi_rows"], seed=0)
    rows, start = [], time.perf_counter()

    def record(row: dict) -> None:
        rows.append({**{k: job[k] for k in ("dataset", "schedule", "hidden", "emb", "dropout")}, **row,
                     "wall_seconds": time.perf_counter() - start, "train_sentences": len(data.train)})

    result = train_vae(data, model_cfg, cfg, on_epoch=record)
    for row in rows:
        row["tokens_per_s"] = result.tokens_per_second
    return rows


def separation(frame: pd.DataFrame, margin: float) -> pd.DataFrame:
    """Per size/dropout: the first epoch (and iteration) at which cyclical's val KL exceeds both other schedules'
    by more than ``margin`` nats (None if never; early leads fall where a cycle restarts β near 0, so KL peaks),
    and at the last epoch (β = β_max for every schedule) cyclical's KL and MI lead over the best other schedule."""
    out = []
    for (hidden, dropout), part in frame.groupby(["hidden", "dropout"]):
        kl = part.pivot_table(index=["epoch", "iteration"], columns="schedule", values="val_kl").reset_index()
        mi = part.pivot_table(index="epoch", columns="schedule", values="val_mi")
        ahead = kl[(kl["cyclical"] - kl[["constant", "monotonic"]].max(axis=1)) > margin]
        first = ahead.iloc[0] if len(ahead) else None
        last_kl, last_mi = kl.iloc[-1], mi.iloc[-1]
        out.append({"hidden": hidden, "dropout": dropout,
                    "first_epoch": None if first is None else int(first["epoch"]),
                    "first_iteration": None if first is None else int(first["iteration"]),
                    "final_kl_lead": float(last_kl["cyclical"] - max(last_kl["constant"], last_kl["monotonic"])),
                    "final_mi_lead": float(last_mi["cyclical"] - max(last_mi["constant"], last_mi["monotonic"]))})
    return pd.DataFrame(out).astype({"first_epoch": "Int64", "first_iteration": "Int64"})


def markdown(frame: pd.DataFrame) -> str:
    """A markdown table of ``frame`` (floats to 3 decimals, NaN/None as –)."""
    def cell(v) -> str:
        if v is None or v is pd.NA or (isinstance(v, float) and v != v):
            return "–"
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def plot(frame: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = list(frame.groupby(["hidden", "dropout"]))
    fig, axes = plt.subplots(2, len(groups), figsize=(4 * len(groups), 6), squeeze=False, sharex="col")
    for col, ((hidden, dropout), part) in enumerate(groups):
        for schedule, run in part.groupby("schedule"):
            axes[0][col].plot(run["iteration"], run["val_kl"], marker="o", ms=3, label=schedule)
            axes[1][col].plot(run["iteration"], run["val_mi"], marker="o", ms=3, label=schedule)
        axes[0][col].set_title(f"hidden {hidden}, word dropout {dropout}")
        axes[0][col].set_ylabel("validation KL (nats / sentence)")
        axes[1][col].set_ylabel("validation MI I(x, z) (nats)")
        axes[1][col].set_xlabel("iteration")
    axes[0][0].legend(title="β schedule")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=("ptb", "yelp"), default="ptb")
    parser.add_argument("--data-dir")
    parser.add_argument("--limit", type=int, default=20000, help="yelp: sentences")
    parser.add_argument("--max-len", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--hidden", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--dropout", type=float, nargs="+", default=[0.0, 0.4])
    parser.add_argument("--mi-rows", type=int, default=300)
    parser.add_argument("--margin", type=float, default=0.5, help="nats of KL that count as separated")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--output", type=Path, default=Path("/tmp/text-vae-budget"))
    args = parser.parse_args(argv)
    args.output.mkdir(parents=True, exist_ok=True)
    jobs = [{"dataset": args.dataset, "data_dir": str(data_dir(args.data_dir)), "limit": args.limit,
             "max_len": args.max_len, "epochs": args.epochs, "hidden": h, "emb": h // 2, "dropout": d,
             "schedule": s, "mi_rows": args.mi_rows}
            for h, d, s in itertools.product(args.hidden, args.dropout, SCHEDULES)]
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        rows = [row for result in pool.map(train_one, jobs) for row in result]
    frame = pd.DataFrame(rows)
    frame.to_parquet(args.output / "budget.parquet", index=False)
    plot(frame, args.output / "budget.png")
    last = frame.sort_values("epoch").groupby(["hidden", "dropout", "schedule"]).tail(1)
    cols = ["hidden", "dropout", "schedule", "epoch", "iteration", "val_rec", "val_kl", "val_mi", "val_au",
            "val_ppl", "tokens_per_s", "wall_seconds"]
    text = [f"# Text-VAE budget study ({args.dataset}, {frame['train_sentences'].iloc[0]} training sentences)",
            "", f"Wall time {time.perf_counter() - start:.0f} s with {args.jobs} jobs.", "",
            markdown(last[cols]), "",
            f"Cyclical against the best other schedule: first epoch its validation KL leads by > {args.margin} nats,"
            " and its KL and MI lead at the last epoch:", "",
            markdown(separation(frame, args.margin))]
    (args.output / "budget.md").write_text("\n".join(text) + "\n")
    print("\n".join(text))
    return 0


if __name__ == "__main__":
    sys.exit(main())
