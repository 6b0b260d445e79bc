"""Training-loop parts: hooks and optimisers; its exports are its subpackages' ``__all__``."""
from .hooks import *  # noqa: F401,F403
from .optimizers import *  # noqa: F401,F403
