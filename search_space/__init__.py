"""What is searched: DCSOD cell genotypes, their sampling, mutation, encoding and networks; predictors and
the Metropolis evolution over them. Ray-free but for the Ray Tune searchers: DCSOD's in ``search_space.searcher``,
the baselines in ``search_space.baseline_searchers``, all by name in ``search_space.searchers.SEARCHERS``.

The public names below are imported lazily (PEP 562): ``from search_space import Genotype`` imports only
``search_space.genotype``, so layers that need one piece (e.g. ``search_space.registry``) do not pull in the
network builder, the predictors or the evolution.
"""
from .lazy_exports import lazy_exports

_SUBMODULES = {
    "architecture": ("architecture_json", "arch_hash_of", "build_model", "describe", "describe_architecture",
                     "parse_architecture"),
    "drawing": ("draw_genotype",),
    "encoding": ("encode", "encode_many", "encoding_length"),
    "genotype": ("CELLS_PER_STAGE", "DEFAULT_K", "NUM_STAGES", "Cell", "Genotype", "default_ops"),
    "network": ("DCSODNet", "build_network", "count_flops", "count_params"),
    "evolution": ("evolve", "run_evolution"),
    "ops": ("OPS", "op_names", "register_op"),
    "predictor": ("PREDICTORS", "Predictor", "load_predictor", "make_predictor", "register_predictor", "validate"),
    "size": ("space_size",),
    "space": ("MUTATIONS", "SearchSpace"),
    "standard_models": ("STANDARD_MODELS", "StandardModel"),
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _SUBMODULES, globals())
