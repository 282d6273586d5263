"""hymba_compile: NVIDIA's Hymba-1.5B, compiled through Apache TVM, checked against an eager oracle."""

import os as _os

# torch's OpenMP threads spin after each op unless told otherwise, taking the cores from TVM's
# thread pool in the same process: measured, a TVM rmsnorm timed after torch ops ran 8-14x
# slower (0.29 vs 4.0 ms) than with the threads sleeping. Set before torch is imported.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def available_cores() -> int:
    """CPUs this process may run on (its affinity mask, so taskset/cgroup cpusets count), the
    default thread count of every TVM kernel this package runs."""
    try:
        return len(_os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return _os.cpu_count() or 1


# TVM's own default is half the logical CPUs on x86 (it assumes hyper-threading), which gave one
# thread on a 2-vCPU machine. Use every core the user has unless TVM_NUM_THREADS says otherwise;
# read by TVM's thread pool when it first starts, so set at import.
_os.environ.setdefault("TVM_NUM_THREADS", str(available_cores()))

from .config import HymbaConfig, LayerPlan, preset
from .errors import (ConfigError, HymbaError, InputError, ModelNotFoundError, TokenizerError,
                     WeightsError)
from .model import HymbaModel, load

__all__ = ["available_cores", "load", "HymbaModel", "HymbaConfig", "LayerPlan", "preset", "HymbaError", "ConfigError",
           "WeightsError", "ModelNotFoundError", "TokenizerError", "InputError"]
__version__ = "0.1.0"
