"""pspo-eval: train, evaluate, judge and report small math language models (the PSPO paper's loop)."""

__version__ = "0.1.0"

from pspo_eval.errors import PspoError  # noqa: E402

__all__ = ["PspoError", "__version__"]
