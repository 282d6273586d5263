"""hymba_compile: NVIDIA's Hymba-1.5B, compiled through Apache TVM, checked against an eager oracle."""

import os as _os

# torch's OpenMP threads spin after each op unless told otherwise, taking the cores from TVM's
# thread pool in the same process: measured, a TVM rmsnorm timed after torch ops ran 8-14x
# slower (0.29 vs 4.0 ms) than with the threads sleeping. Set before torch is imported.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .config import HymbaConfig, LayerPlan, preset
from .errors import (ConfigError, HymbaError, InputError, ModelNotFoundError, TokenizerError,
                     WeightsError)
from .model import HymbaModel, load

__all__ = ["load", "HymbaModel", "HymbaConfig", "LayerPlan", "preset", "HymbaError", "ConfigError",
           "WeightsError", "ModelNotFoundError", "TokenizerError", "InputError"]
__version__ = "0.1.0"
