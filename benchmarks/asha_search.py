"""What ASHA early stopping (``search.early_stop=asha``) does to DCSOD's search: its result and its cost.

For each seed, the pipeline runs twice with the same settings but ``search.early_stop`` = none / asha (the
warmup, distillation and predictor stages are the same seeded computation in both; only the search differs).
Per run it reads the run directory: the best validation metric among the search stage's *completed* trainings,
the champion's test metric, the search stage's wall time and the epochs the search trained (one Tune result
per epoch: ``tune/search/*/progress.csv`` rows), and prints a markdown table with the per-seed rows and the
mean difference asha − none.

    python benchmarks/asha_search.py --preset quick --seeds 0 1 2 --trials 16 --output /tmp/asha

A finished run directory is read back, not run again (the pipeline's own resume), so an interrupted benchmark
continues where it stopped.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def run_pipeline(preset: str, seed: int, trials: int, mode: str, out: Path, extra: list[str]) -> Path:
    """One ``pipelines/dcsod.py`` run (no per-seed comparison retrains); its run directory."""
    path = out / f"{mode}-seed{seed}"
    if (path / "best.json").exists():
        return path
    cmd = [sys.executable, str(ROOT / "pipelines" / "dcsod.py"), "--preset", preset, "--set", f"seed={seed}",
           "--set", f"search.trials={trials}", "--set", f"search.early_stop={mode}", "--set", "final.compare.seeds=[]",
           "--output", str(path), "--tracking-uri", f"sqlite:///{out / 'mlflow.db'}", "--no-dashboard",
           *[x for s in extra for x in ("--set", s)]]
    subprocess.run(cmd, check=True)
    return path


def measure(path: Path) -> dict:
    """The search's outcome and cost in one run directory."""
    best = json.loads((path / "best.json").read_text())
    metric = best["metric"]
    history = pd.read_parquet(path / "history.parquet")
    searched = history[history.stage == "search"]
    manifest = json.loads((path / "manifest.json").read_text())
    search = manifest["stages"]["search"]
    epochs = sum(len(pd.read_csv(p)) for p in (path / "tune" / "search").glob("*/progress.csv"))
    return {"metric": metric, "search_best": float(searched[metric].max()), "completed": len(searched),
            "stopped": int(search.get("stopped_early", 0)), "search_epochs": epochs,
            "search_seconds": float(search["wall_seconds"]), "champion_test": float(best["measured_test"][metric]),
            "champion_from_search": best["measured_search"]["stage"] == "search"}


def table(rows: list[dict]) -> str:
    head = ("| seed | early stop | search best (val) | completed | stopped | epochs trained | search wall s "
            "| champion test | champion found by the search |")
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        lines.append(f"| {r['seed']} | {r['mode']} | {r['search_best']:.4f} | {r['completed']} | {r['stopped']} | "
                     f"{r['search_epochs']} | {r['search_seconds']:.0f} | {r['champion_test']:.4f} | "
                     f"{'yes' if r['champion_from_search'] else 'no'} |")
    by = {(r["seed"], r["mode"]): r for r in rows}
    seeds = sorted({r["seed"] for r in rows if (r["seed"], "none") in by and (r["seed"], "asha") in by})
    for key, label in (("search_best", "search best"), ("champion_test", "champion test"),
                       ("search_epochs", "epochs trained"), ("search_seconds", "search wall s")):
        diffs = [by[(s, "asha")][key] - by[(s, "none")][key] for s in seeds]
        if diffs:
            sd = statistics.stdev(diffs) if len(diffs) > 1 else float("nan")
            lines.append(f"\nasha − none, {label}: mean {statistics.mean(diffs):+.4g} (sd {sd:.3g}, n = {len(diffs)})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--trials", type=int, default=16, help="search.trials of every run")
    parser.add_argument("--output", type=Path, default=Path("/tmp/asha-search"))
    parser.add_argument("--set", dest="sets", action="append", default=[], help="extra pipeline settings")
    args = parser.parse_args(argv)
    args.output.mkdir(parents=True, exist_ok=True)
    rows = []
    for seed in args.seeds:
        for mode in ("none", "asha"):
            path = run_pipeline(args.preset, seed, args.trials, mode, args.output, args.sets)
            rows.append({"seed": seed, "mode": mode, **measure(path)})
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
