"""Training tokens per second of the text VAE, one short run per posterior (Ray-free: it runs where Ray's wheel
cannot, e.g. the lent GPU machine).

Trains an LSTM VAE on PTB (``ptb/{valid,test}.txt`` pooled and split as the sweep does, or ``train.txt`` when
present) for ``--epochs`` epochs per posterior with the cyclical schedule, and reports the training tokens/s of
:func:`trainables.text.vae_model.train_vae` (words plus ``<eos>``, validation excluded) and the seconds per
update. Sizes default to the ``ptb-paper`` preset (embedding 512, LSTM 1024, latent 32, J = 5, K_max = 50,
batch 32); ``--cpu-preset`` uses the CPU ``ptb`` preset's sizes instead (embedding 64, LSTM 128, J = 1, K_max = 10,
word dropout 0.4). One JSON line per posterior goes to ``--jsonl``; a Markdown table to stdout.

    python benchmarks/text_vae_tokens.py --data-dir ../shared/data --device cuda --epochs 1
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PAPER = {"emb_dim": 512, "hidden_dim": 1024, "latent_dim": 32, "noise_dim": 16, "j_samples": 5, "k_max": 50,
         "word_dropout": 0.0, "max_len": 100, "min_freq": 1}
CPU = {"emb_dim": 64, "hidden_dim": 128, "latent_dim": 32, "noise_dim": 16, "j_samples": 1, "k_max": 10,
       "word_dropout": 0.4, "max_len": 40, "min_freq": 2}


def measure(posterior: str, sizes: dict, args: argparse.Namespace) -> dict:
    import torch

    from trainables.text.data import load_text_data
    from trainables.text.vae_model import VAEModelConfig, VAETrainConfig, train_vae

    data = load_text_data("ptb", args.data_dir, max_len=sizes["max_len"], min_freq=sizes["min_freq"],
                          val_frac=0.1, test_frac=0.1, seed=0)
    model = VAEModelConfig(emb_dim=sizes["emb_dim"], hidden_dim=sizes["hidden_dim"], latent_dim=sizes["latent_dim"],
                           posterior=posterior, word_dropout=sizes["word_dropout"],
                           posterior_options={"semi-implicit": {"noise_dim": sizes["noise_dim"]}})
    si = posterior == "semi-implicit"
    cfg = VAETrainConfig(epochs=args.epochs, batch_size=args.batch, lr=1e-3, schedule="cyclical",
                         k_max=sizes["k_max"] if si else 0, j_samples=sizes["j_samples"] if si else 1,
                         iw_samples=0, mi_rows=64, eval_components=2, seed=0)
    if args.device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = train_vae(data, model, cfg, device=args.device)
    updates = result.history[-1]["iteration"]
    return {"posterior": posterior, "device": args.device,
            "gpu": torch.cuda.get_device_name() if args.device == "cuda" else "",
            "threads": torch.get_num_threads(), **sizes,
            "j_samples_used": cfg.j_samples, "k_max_used": cfg.k_max, "batch": args.batch, "epochs": args.epochs,
            "updates": updates, "train_sentences": len(data.train), "tokens_per_s": result.tokens_per_second,
            "seconds_per_update": result.train_seconds / max(updates, 1), "train_seconds": result.train_seconds,
            "wall_seconds": time.perf_counter() - start}


def table(rows: list[dict]) -> str:
    lines = ["| posterior | device | model (emb / LSTM / latent, J, K_max) | updates | tokens/s | s per update |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        model = f"{r['emb_dim']} / {r['hidden_dim']} / {r['latent_dim']}, {r['j_samples_used']}, {r['k_max_used']}"
        device = r["gpu"] or f"cpu ({r['threads']} threads)"
        lines.append(f"| {r['posterior']} | {device} | {model} | {r['updates']} | {r['tokens_per_s']:,.0f} | "
                     f"{r['seconds_per_update']:.4f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=os.environ.get("DCSOD_DATA_DIR", "../shared/data"),
                        help="folder holding ptb/ (default $DCSOD_DATA_DIR, else ../shared/data)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--posteriors", nargs="+", default=["gaussian", "semi-implicit"])
    parser.add_argument("--cpu-preset", action="store_true", help="the CPU ptb preset's sizes, not ptb-paper's")
    parser.add_argument("--jsonl", default=None, help="append one JSON line per posterior here")
    args = parser.parse_args(argv)
    if not (Path(args.data_dir) / "ptb").is_dir():
        print(f"error: no ptb/ folder in {args.data_dir} (use --data-dir)", file=sys.stderr)
        return 2
    sizes = CPU if args.cpu_preset else PAPER
    rows = []
    for posterior in args.posteriors:
        rows.append(measure(posterior, sizes, args))
        if args.jsonl:
            with open(args.jsonl, "a") as fh:
                fh.write(json.dumps(rows[-1]) + "\n")
        print(json.dumps(rows[-1]), flush=True)
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
