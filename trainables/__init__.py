"""How one candidate is trained and scored: data protocols, objectives, OOD scores, the training loop.

Plain PyTorch (no Ray import): callable and benchmarkable alone; Ray adapters live in ``pipelines``.
"""
from .data import PROTOCOLS, LabelledImages, Protocol, make_protocol, register_protocol
from .losses import OBJECTIVES, ensemble_probs, make_objective, register_objective
from .ood import SCORES, auroc, evaluate_ood, fpr_at_tpr, make_score, register_score
from .train import PRESETS, DeviceData, DivergedError, TeacherCache, TrainConfig, train_candidate

__all__ = [
    "OBJECTIVES", "PRESETS", "PROTOCOLS", "SCORES", "DeviceData", "DivergedError", "LabelledImages", "Protocol",
    "TeacherCache", "TrainConfig", "auroc", "ensemble_probs", "evaluate_ood", "fpr_at_tpr", "make_objective",
    "make_protocol", "make_score", "register_objective", "register_protocol", "register_score", "train_candidate",
]
