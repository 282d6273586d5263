"""hymba_compile: NVIDIA's Hymba-1.5B, compiled through Apache TVM, checked against an eager oracle."""

from .config import HymbaConfig, LayerPlan, preset
from .errors import (ConfigError, HymbaError, InputError, ModelNotFoundError, TokenizerError,
                     WeightsError)
from .model import HymbaModel, load

__all__ = ["load", "HymbaModel", "HymbaConfig", "LayerPlan", "preset", "HymbaError", "ConfigError",
           "WeightsError", "ModelNotFoundError", "TokenizerError", "InputError"]
__version__ = "0.1.0"
