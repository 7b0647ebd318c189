"""Time recording N rows into ``HistoryStore`` (the driver's per-trial write) and reading them back.

    python benchmarks/history_append.py --rows 10000

Prints the seconds per row at every tenth of the run (constant = O(1) per row, growing = O(rows)) and the total.
The rows look like the pipeline's (genotype JSON, the default scores' metrics).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from pipelines.nas.tracking import HistoryStore

GENOTYPE = '{"cells":[[[1,0,0],[1,1,0]],[[0,1,0],[1,0,1]],[[1,1,1],[0,0,1]]],"k":6}'


def row(i: int) -> dict:
    return {"arch_hash": f"{i:012x}", "genotype": GENOTYPE, "stage": "distill", "iteration": 1, "seed": 0,
            "auroc_msp": 0.5 + (i % 97) / 200, "auroc_energy": 0.6, "auroc_maha": 0.7, "fpr95_msp": 0.3,
            "id_acc": 0.9, "train_seconds": 1.5, "mlflow_run_id": f"{i:032x}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = HistoryStore(Path(tmp) / "history.parquet")
        start = last = time.perf_counter()
        step = max(1, args.rows // 10)
        for i in range(args.rows):
            store.append(row(i))
            if (i + 1) % step == 0:
                now = time.perf_counter()
                print(f"rows {i + 1 - step + 1:>6}-{i + 1:<6} {1000 * (now - last) / step:8.2f} ms/row", flush=True)
                last = now
        if hasattr(store, "compact"):
            store.compact()
        total = time.perf_counter() - start
        t = time.perf_counter()
        n = len(HistoryStore(store.path).read())
        print(f"total {total:.1f} s for {args.rows} rows ({1000 * total / args.rows:.2f} ms/row); "
              f"read back {n} rows in {time.perf_counter() - t:.2f} s")


if __name__ == "__main__":
    main()
