"""How one image candidate is trained and scored: data protocols (``data``, ``image_folder``, ``augment``),
objectives (``losses``), OOD scores and metrics (``ood``), the training loop (``train``, ``cuda_graph``), the
packaged model (``export``), the loss landscape, the Ray Tune adapter (``tune_trainable``) and the
single-candidate CLI (``train_cli``).

Plain PyTorch except ``tune_trainable``. The public names below are imported lazily (PEP 562):
``from trainables.image import make_score`` imports only ``trainables.image.ood``.
"""
from search_space.lazy_exports import lazy_exports

_SUBMODULES = {
    "data": ("PROTOCOLS", "LabelledImages", "Protocol", "make_protocol", "register_protocol"),
    "losses": ("OBJECTIVES", "ensemble_probs", "make_objective", "register_objective"),
    "ood": ("SCORES", "auroc", "evaluate_ood", "fpr_at_tpr", "make_score", "register_score"),
    "train": ("PRESETS", "DeviceData", "TeacherCache", "TrainConfig", "train_candidate"),
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _SUBMODULES, globals())
