"""What is searched: DCSOD cell genotypes, their sampling, mutation, encoding and networks; predictors and
the Metropolis evolution over them. Ray-free; the Ray Tune Searcher lives in ``search_space.searcher``."""
from .encoding import encode, encode_many, encoding_length
from .genotype import CELLS_PER_STAGE, DEFAULT_K, NUM_STAGES, Cell, Genotype, default_ops
from .network import DCSODNet, build_network, count_flops, count_params, describe
from .evolution import evolve, run_evolution
from .ops import OPS, op_names, register_op
from .predictor import PREDICTORS, Predictor, make_predictor, register_predictor, validate
from .size import space_size
from .space import MUTATIONS, SearchSpace

__all__ = [
    "CELLS_PER_STAGE", "DEFAULT_K", "NUM_STAGES", "MUTATIONS", "OPS", "Cell", "DCSODNet", "Genotype",
    "SearchSpace", "build_network", "count_flops", "count_params", "default_ops", "describe", "encode",
    "encode_many", "encoding_length", "op_names", "register_op", "space_size", "evolve", "run_evolution",
    "PREDICTORS", "Predictor", "make_predictor", "register_predictor", "validate",
]
