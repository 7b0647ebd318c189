"""``python -m trainables train --genotype G [--preset quick] [--set key=value ...]``: train one candidate
and print one JSON line of metrics (weights are not printed; ``--save PATH`` writes them).

``--set`` keys are :class:`trainables.TrainConfig` fields (``epochs=5``, ``objective=ce``,
``objective_args={lam: 0.5}``) or protocol options prefixed ``protocol.`` (``protocol.path=cifar.zip``);
values are parsed as YAML scalars. Bad input prints one line ``error: ...`` and exits 2; a diverged run
prints ``error: diverged: ...`` and exits 3.
"""
from __future__ import annotations

import argparse
import sys

import yaml

from .data import PROTOCOLS, make_protocol
from .errors import DivergedError
from .train import PRESETS, TrainConfig, metrics_json, train_candidate


def parse_sets(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--set: expected key=value, got {pair!r}")
        out[key.strip()] = yaml.safe_load(value) if value.strip() else ""
    return out


def build(preset: str, protocol: str | None, sets: dict) -> tuple[str, dict, TrainConfig]:
    """(protocol name, protocol options, config) from a preset plus overrides."""
    if preset not in PRESETS:
        raise ValueError(f"--preset: unknown {preset!r}; valid: {', '.join(sorted(PRESETS))}")
    settings = dict(PRESETS[preset])
    protocol = protocol or settings["protocol"]
    del settings["protocol"]
    if protocol not in PROTOCOLS:
        raise ValueError(f"--protocol: unknown {protocol!r}; valid: {', '.join(sorted(PROTOCOLS))}")
    options = {k.split(".", 1)[1]: v for k, v in sets.items() if k.startswith("protocol.")}
    settings.update({k: v for k, v in sets.items() if not k.startswith("protocol.")})
    return protocol, options, TrainConfig().replace(**settings)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainables", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train and evaluate one architecture")
    p.add_argument("--genotype", required=True, help="genotype JSON text or a file holding it")
    p.add_argument("--preset", default="quick", help=f"one of {', '.join(sorted(PRESETS))} (default quick)")
    p.add_argument("--protocol", default=None, help=f"override the preset's protocol: {', '.join(sorted(PROTOCOLS))}")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    p.add_argument("--save", default=None, help="write the trained state_dict here (torch.save)")
    args = parser.parse_args(argv)
    try:
        from search_space.genotype_cli import load_genotype

        genotype = load_genotype(args.genotype)
        name, options, config = build(args.preset, args.protocol, parse_sets(args.set))
        protocol = make_protocol(name, **options)
        result = train_candidate(genotype, protocol, config)
    except DivergedError as err:
        print(f"error: diverged: {err}", file=sys.stderr)
        return 3
    except (ValueError, TypeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.save:
        import torch

        torch.save(result["state_dict"], args.save)
    print(metrics_json(result))
    return 0
