"""Score a user's own data with a registered model: how well does it tell ``--id`` images from ``--ood`` images?

    python -m pipelines.score models:/dcsod-digits@champion --id my_id_images/ --ood my_ood_images.zip

``--id`` and ``--ood`` are ImageFolder directories or zips (``[<split>/]<class>/<image>``; class names are not
used, every image counts). Images are read as the model's channels (grayscale for a 1-channel model) and must
share one size unless ``--image-size`` resizes them. For each score (``--scores``, default ``msp energy``: those
computed from the logits alone) it prints and writes to ``--out`` (default ``score.json``) AUROC, AUPR-In,
AUPR-Out and FPR95 in this project's conventions plus OpenOOD's (:mod:`trainables.image.ood`), ID positive, higher
score = more in-distribution. The tracking store is ``--tracking-uri``, else ``MLFLOW_TRACKING_URI``, else
MLflow's default. Bad input is one line and exit status 2.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable without installing it
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def score_sets(model, id_images, ood_images, scores: list[str], batch_size: int = 512) -> dict[str, dict]:
    """``{score: {metric: value}}`` for ``model`` (a :class:`trainables.image.export.ScoredClassifier`) on uint8 image
    arrays ``(N, C, H, W)``; metrics are every kind of :data:`trainables.image.ood.DETECTION_METRICS`."""
    import numpy as np
    import torch

    from trainables.image.ood import DETECTION_METRICS

    def per_batch(images, kind):
        with torch.no_grad():
            return np.concatenate([model.score(images[i:i + batch_size], kind).numpy()
                                   for i in range(0, len(images), batch_size)])

    out = {}
    for kind in scores:
        i, o = per_batch(id_images, kind), per_batch(ood_images, kind)
        out[kind] = {name: float(metric(i, o)) for name, metric in DETECTION_METRICS.items()}
    return out


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m pipelines.score", description=__doc__.splitlines()[0],
                                     epilog="Example: python -m pipelines.score models:/dcsod-digits@champion "
                                            "--id id_dir --ood ood.zip --scores msp energy")
    parser.add_argument("model_uri", help="an MLflow model URI, e.g. models:/dcsod-digits@champion or runs:/ID/model")
    parser.add_argument("--id", required=True, dest="id_path", help="in-distribution images (ImageFolder dir/zip)")
    parser.add_argument("--ood", required=True, dest="ood_path", help="out-of-distribution images (dir/zip)")
    parser.add_argument("--scores", nargs="+", default=["msp", "energy"], help="msp and/or energy")
    parser.add_argument("--image-size", type=int, default=None, help="resize every image to this square size")
    parser.add_argument("--out", default="score.json", help="where the metrics are written (JSON)")
    parser.add_argument("--tracking-uri", default=None)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from trainables.image.export import ScoredClassifier

    bad = [s for s in args.scores if s not in ScoredClassifier.KINDS]
    if bad:
        print(f"error: --scores: unknown {bad}; valid: {', '.join(ScoredClassifier.KINDS)}", file=sys.stderr)
        return 2
    import mlflow

    from trainables.image.data import load_image_folder

    if args.tracking_uri:
        mlflow.set_tracking_uri(args.tracking_uri)
    try:
        model = mlflow.pytorch.load_model(args.model_uri, map_location="cpu")
    except Exception as err:  # MLflow raises several types for a missing model or an unreachable store
        print(f"error: {args.model_uri}: {' '.join(str(err).split())[:300]}", file=sys.stderr)
        return 2
    grayscale = int(model.mean.shape[1]) == 1
    try:
        sets = {name: load_image_folder(path, image_size=args.image_size, grayscale=grayscale).images
                for name, path in (("id", args.id_path), ("ood", args.ood_path))}
        results = score_sets(model, sets["id"], sets["ood"], args.scores)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    report = {"model_uri": args.model_uri, "id": str(args.id_path), "ood": str(args.ood_path),
              "n_id": len(sets["id"]), "n_ood": len(sets["ood"]), "metrics": results}
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    kinds = list(next(iter(results.values())))
    print(f"{len(sets['id'])} ID and {len(sets['ood'])} OOD images; ID positive, higher score = more in-distribution")
    print(" | ".join(["score", *kinds]))
    for kind, values in results.items():
        print(" | ".join([kind, *(f"{values[k]:.4f}" for k in kinds)]))
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
