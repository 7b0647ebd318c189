"""How one candidate is trained and scored: data protocols, objectives, OOD scores, the training loop.

Plain PyTorch (no Ray import): callable and benchmarkable alone; Ray adapters live in ``pipelines``.
The public names below are imported lazily (PEP 562): ``from trainables import make_score`` imports only
``trainables.ood``, and the text-VAE modules never import the DCSOD training loop or the search code.
"""
from search_space.lazy_exports import lazy_exports

_SUBMODULES = {
    "data": ("PROTOCOLS", "LabelledImages", "Protocol", "make_protocol", "register_protocol"),
    "losses": ("OBJECTIVES", "ensemble_probs", "make_objective", "register_objective"),
    "ood": ("SCORES", "auroc", "evaluate_ood", "fpr_at_tpr", "make_score", "register_score"),
    "errors": ("DivergedError",),
    "train": ("PRESETS", "DeviceData", "TeacherCache", "TrainConfig", "train_candidate"),
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _SUBMODULES, globals())
