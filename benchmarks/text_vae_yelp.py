"""Text-VAE quality and speed (plain PyTorch, in process, no Ray): prints Markdown tables.

``--part yelp``: Yelp dev (``$DCSOD_DATA_DIR``/``--data-dir``), a seeded subset of ``--limit`` sentences split
90/10 into train+validation / test (validation = 5% of all, for the aggressive-training stop rule only), for
Gaussian and semi-implicit posteriors × constant/monotonic/cyclical schedules: test rec, KL, ELBO (nats per
sentence), PPL, IW-PPL (``--iw`` samples), active units, MI, downstream accuracy of logistic regression on the
posterior mean with 1/10/100% of the training labels, and training tokens/s.

``--part toy``: the 10-sequence toy problem per schedule (Gaussian, several seeds): leave-one-out 1-NN accuracy
of z ~ q(z|x) → sequence id (chance 0.1), KL, MI, AU.

    OMP_NUM_THREADS=1 python benchmarks/text_vae_yelp.py --part yelp --limit 20000 --epochs 2
    OMP_NUM_THREADS=1 python benchmarks/text_vae_yelp.py --part toy --seeds 0 1
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from trainables.text.data import load_yelp, toy_corpus
from trainables.text.vae_metrics import downstream_accuracy, evaluate_vae, knn_accuracy
from trainables.text.vae_model import VAEModelConfig, VAETrainConfig, train_vae

SCHEDULES = ("constant", "monotonic", "cyclical")
POSTERIORS = ("gaussian", "semi-implicit")


def yelp(args: argparse.Namespace) -> None:
    data_dir = Path(args.data_dir or os.environ.get("DCSOD_DATA_DIR")
                    or Path(__file__).resolve().parents[2] / "shared" / "data")
    data = load_yelp(data_dir, limit=args.limit, val_frac=0.05, test_frac=0.1, seed=0)
    print(f"<!-- {data.describe()} -->")
    print("| posterior | schedule | rec | KL | ELBO | PPL | IW-PPL | AU | MI | acc 1% | acc 10% | acc 100% "
          "| train tok/s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for posterior in args.posteriors:
        for schedule in args.schedules:
            model_cfg = VAEModelConfig(emb_dim=args.emb, hidden_dim=args.hidden, latent_dim=args.latent,
                                       posterior=posterior, posterior_options={"semi-implicit": {"noise_dim": 16}},
                                       word_dropout=args.word_dropout)
            cfg = VAETrainConfig(epochs=args.epochs, batch_size=args.batch, lr=1e-3, schedule=schedule,
                                 cycles=args.cycles, ratio=0.5, k_max=args.k_max, iw_samples=args.iw,
                                 eval_components=20, seed=0, aggressive=args.aggressive, aggressive_max_steps=10)
            result = train_vae(data, model_cfg, cfg, device=args.device)
            t = result.test
            train_z = evaluate_vae(result.model, data.train, data.vocab, mi_rows=1, n_components=20,
                                   device=args.device)["means"]
            acc = downstream_accuracy(train_z, data.train.labels, t["means"], t["labels"], seed=0)
            print(f"| {posterior} | {schedule} | {t['rec']:.2f} | {t['kl']:.2f} | {t['elbo']:.2f} | {t['ppl']:.1f} | "
                  f"{t['iw_ppl']:.1f} | {t['au']} | {t['mi']:.2f} | {acc['acc_1pct']:.3f} | {acc['acc_10pct']:.3f} | "
                  f"{acc['acc_100pct']:.3f} | {result.tokens_per_second:,.0f} |", flush=True)


def toy(args: argparse.Namespace) -> None:
    data = toy_corpus(copies=50)
    model_cfg = VAEModelConfig(emb_dim=16, hidden_dim=64, latent_dim=2)
    print("| schedule | seed | 1-NN acc z→sequence | KL | MI | AU | ELBO | train tok/s | seconds |")
    print("|---|---|---|---|---|---|---|---|---|")
    for schedule in SCHEDULES:
        for seed in args.seeds:
            start = time.perf_counter()
            cfg = VAETrainConfig(epochs=args.toy_epochs, batch_size=10, lr=5e-3, schedule=schedule, cycles=4, ratio=0.5,
                              iw_samples=0, latent_samples=50, seed=seed)
            result = train_vae(data, model_cfg, cfg, device=args.device)
            t = result.test
            z = t["samples"].reshape(-1, 2)
            acc = knn_accuracy(z, np.repeat(t["labels"], 50))
            print(f"| {schedule} | {seed} | {acc:.3f} | {t['kl']:.2f} | {t['mi']:.2f} | {t['au']} | {t['elbo']:.2f} | "
                  f"{result.tokens_per_second:,.0f} | {time.perf_counter() - start:.0f} |", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=("yelp", "toy"), required=True)
    p.add_argument("--data-dir")
    p.add_argument("--limit", type=int, default=20000, help="Yelp sentences used (seeded subset)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--emb", type=int, default=64)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--latent", type=int, default=16)
    p.add_argument("--cycles", type=int, default=4)
    p.add_argument("--k-max", type=int, default=10)
    p.add_argument("--iw", type=int, default=20)
    p.add_argument("--word-dropout", type=float, default=0.0, help="decoder input word dropout (Yelp)")
    p.add_argument("--aggressive", action="store_true", help="aggressive encoder training (Yelp; cap 10 inner steps)")
    p.add_argument("--posteriors", nargs="+", default=list(POSTERIORS))
    p.add_argument("--schedules", nargs="+", default=list(SCHEDULES))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--toy-epochs", type=int, default=30)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"<!-- {' '.join(sys.argv)}; device {args.device}, torch threads {args.threads} -->")
    (yelp if args.part == "yelp" else toy)(args)


if __name__ == "__main__":
    main()
