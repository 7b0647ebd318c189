"""The protocol choice shared by the ranking benchmarks: ``--protocol digits|cifar10-split [--data --images]``."""
from __future__ import annotations

import argparse

from trainables.image import Protocol, make_protocol


def add_protocol_args(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument("--protocol", choices=("cifar10-split", "digits"), default=default,
                        help="digits: the embedded 8x8 set, a CPU-sized proxy (--data, --images unused)")
    parser.add_argument("--data", help="CIFAR-10 ImageFolder zip/dir (cifar10-split)")
    parser.add_argument("--images", type=int, default=25000, help="ID training images (cifar10-split)")


def protocol_from_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Protocol:
    """The chosen protocol (CIFAR-10 split 10:1:1 into train/val/test, seeded by ``args.seed``)."""
    if args.protocol == "digits":
        return make_protocol("digits", seed=args.seed)
    if not args.data:
        parser.error("--data is required for the cifar10-split protocol")
    return make_protocol("cifar10-split", path=args.data, id_fractions=(10, 1, 1), seed=args.seed,
                         train_limit=args.images)
