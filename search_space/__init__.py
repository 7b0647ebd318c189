"""What is searched: DCSOD cell genotypes, their sampling, mutation, encoding and networks; predictors and
the Metropolis evolution over them. Ray-free; the Ray Tune Searcher lives in ``search_space.searcher``.

The public names below are imported lazily (PEP 562): ``from search_space import Genotype`` imports only
``search_space.genotype``, so layers that need one piece (e.g. ``search_space.registry``) do not pull in the
network builder, the predictors or the evolution.
"""
import importlib

_SUBMODULES = {
    "encoding": ("encode", "encode_many", "encoding_length"),
    "genotype": ("CELLS_PER_STAGE", "DEFAULT_K", "NUM_STAGES", "Cell", "Genotype", "default_ops"),
    "network": ("DCSODNet", "build_network", "count_flops", "count_params", "describe"),
    "evolution": ("evolve", "run_evolution"),
    "ops": ("OPS", "op_names", "register_op"),
    "predictor": ("PREDICTORS", "Predictor", "make_predictor", "register_predictor", "validate"),
    "size": ("space_size",),
    "space": ("MUTATIONS", "SearchSpace"),
}
_EXPORTS = {name: module for module, names in _SUBMODULES.items() for name in names}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value  # later look-ups no longer reach __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
