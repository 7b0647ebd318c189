"""``python -m search_space {sample,describe,mutate,size}``: the search space from the shell.

Genotypes are read as JSON text or from a file path and printed as one compact JSON line each.
Bad input prints one line ``error: ...`` to stderr and exits with code 2.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from .architecture import describe
from .genotype import DEFAULT_K, Genotype
from .space import SearchSpace


def load_genotype(arg: str) -> Genotype:
    """Parse ``arg`` as genotype JSON text, or as the path of a file holding it."""
    text = arg
    if not arg.lstrip().startswith("{"):
        if not os.path.isfile(arg):
            raise ValueError(f"genotype: neither JSON text nor an existing file: {arg!r}")
        with open(arg) as f:
            text = f.read()
    return Genotype.from_json(text)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m search_space", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def space_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--k", type=int, default=DEFAULT_K, help="vertices per cell incl. the input vertex (default 6)")
        p.add_argument("--search-ops", action="store_true", help="search operators too (default: fixed assignment)")

    p = sub.add_parser("sample", help="print N sampled genotypes, one JSON per line")
    p.add_argument("--n", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--edge-prob", type=float, default=0.5, help="Bernoulli probability of each edge")
    p.add_argument("--allow-duplicates", action="store_true", help="do not drop repeated arch_hashes")
    space_args(p)

    p = sub.add_parser("describe", help="arch_hash, params and FLOPs of a genotype")
    p.add_argument("genotype", help="genotype JSON text or a file holding it")
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--in-channels", type=int, default=3, choices=(1, 3))
    p.add_argument("--input-size", type=int, default=32, help="square input side in pixels (>= 8)")
    p.add_argument("--width", type=int, default=32, help="channels of the first stage")

    p = sub.add_parser("mutate", help="print one mutated child of a genotype")
    p.add_argument("genotype", help="genotype JSON text or a file holding it")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--kind", choices=("edge", "cell", "op"), default=None)
    p.add_argument("--search-ops", action="store_true", help="allow operator mutations")

    p = sub.add_parser("size", help="size of the space")
    space_args(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "sample":
            space = SearchSpace(k=args.k, edge_prob=args.edge_prob, search_ops=args.search_ops)
            for g in space.sample_many(args.n, seed=args.seed, unique=not args.allow_duplicates):
                print(g.to_json())
        elif args.command == "describe":
            if args.input_size < 8:
                raise ValueError(f"--input-size: expected >= 8, got {args.input_size}")
            g = load_genotype(args.genotype)
            print(json.dumps(describe(g, args.num_classes, args.in_channels, args.input_size, args.width)))
        elif args.command == "mutate":
            g = load_genotype(args.genotype)
            space = SearchSpace(k=g.k, search_ops=args.search_ops)
            print(space.mutate(g, seed=args.seed, kind=args.kind).to_json())
        elif args.command == "size":
            print(json.dumps(SearchSpace(k=args.k, search_ops=args.search_ops).size()))
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
