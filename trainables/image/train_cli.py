"""``python -m trainables train --genotype G [--preset quick] [--set key=value ...]``: train one candidate
and print one JSON line of metrics (weights are not printed; ``--save PATH`` writes them).

``--set`` (the syntax of every command line, :mod:`trainables.overrides`: dotted keys, YAML values) keys are
:class:`trainables.image.TrainConfig` fields (``epochs=5``, ``objective=ce``, ``objective_args={lam: 0.5}``) or
options of the protocol in the ``protocol`` section (``protocol.path=cifar.zip``). Bad input prints one line
``error: ...`` and exits 2; a diverged run prints ``error: diverged: ...`` and exits 3.
"""
from __future__ import annotations

import argparse
import sys

from trainables.errors import DivergedError
from trainables.image.data import PROTOCOLS, make_protocol
from trainables.image.train import PRESETS, TrainConfig, metrics_json, train_candidate
from trainables.overrides import parse_overrides


def build(preset: str, protocol: str | None, sets: dict) -> tuple[str, dict, TrainConfig]:
    """(protocol name, protocol options, config) from a preset plus ``--set`` overrides as
    :func:`~trainables.overrides.parse_overrides` nests them: config fields at the top, protocol options in the
    ``protocol`` section."""
    if preset not in PRESETS:
        raise ValueError(f"--preset: unknown {preset!r}; valid: {', '.join(sorted(PRESETS))}")
    settings = dict(PRESETS[preset])
    protocol = protocol or settings["protocol"]
    del settings["protocol"]
    if protocol not in PROTOCOLS:
        raise ValueError(f"--protocol: unknown {protocol!r}; valid: {', '.join(sorted(PROTOCOLS))}")
    sets = dict(sets)
    options = sets.pop("protocol", {})
    if not isinstance(options, dict):
        raise ValueError(f"--set protocol: expected protocol.<option>=value, got protocol={options!r}")
    settings.update(sets)
    return protocol, options, TrainConfig().replace(**settings)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainables", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train and evaluate one architecture")
    p.add_argument("--genotype", required=True, help="genotype JSON text or a file holding it")
    p.add_argument("--preset", default="quick", help=f"one of {', '.join(sorted(PRESETS))} (default quick)")
    p.add_argument("--protocol", default=None,
                   help=f"override the preset's protocol: {', '.join(sorted(PROTOCOLS))}")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key or a protocol option (protocol.KEY=VALUE); values are YAML")
    p.add_argument("--save", default=None, help="write the trained state_dict here (torch.save)")
    args = parser.parse_args(argv)
    try:
        from search_space.genotype_cli import load_genotype

        genotype = load_genotype(args.genotype)
        name, options, config = build(args.preset, args.protocol, parse_overrides(args.set))
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
