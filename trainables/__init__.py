"""How one candidate is trained and scored: data protocols, objectives, OOD scores, the training loop.

Plain PyTorch (no Ray import): callable and benchmarkable alone; Ray adapters live in ``pipelines``.
The public names below are imported lazily (PEP 562): ``from trainables import make_score`` imports only
``trainables.ood``, and the text-VAE modules never import the DCSOD training loop or the search code.
"""
import importlib

_SUBMODULES = {
    "data": ("PROTOCOLS", "LabelledImages", "Protocol", "make_protocol", "register_protocol"),
    "losses": ("OBJECTIVES", "ensemble_probs", "make_objective", "register_objective"),
    "ood": ("SCORES", "auroc", "evaluate_ood", "fpr_at_tpr", "make_score", "register_score"),
    "errors": ("DivergedError",),
    "train": ("PRESETS", "DeviceData", "TeacherCache", "TrainConfig", "train_candidate"),
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
