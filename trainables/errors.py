"""Errors shared by the trainers (imports nothing, so the text-VAE and the DCSOD trainer can both use it)."""


class DivergedError(FloatingPointError):
    """The training loss (or a gradient norm) became NaN or infinite. Callers record the evaluation as failed
    with this reason instead of retrying it: the same seed and settings diverge again."""
