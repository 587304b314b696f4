"""wmkit: the package behind the World Models book.

Stage 1 lives in :mod:`wmkit.worldmodels`, stage 2 in :mod:`wmkit.dreamer`; shared pieces are
:mod:`wmkit.profiles` (sizes per profile), :mod:`wmkit.widgets` (the rollout scrubber),
:mod:`wmkit.checkpoint`, :mod:`wmkit.config`, :mod:`wmkit.training` and :mod:`wmkit.bench`.
"""

from wmkit.malloc import apply_default as _keep_freed_memory
from wmkit.profiles import Profile, default_profile_name, profile
from wmkit.utils import count_parameters, pick_device, seed_everything

_keep_freed_memory()   # glibc: large CPU tensors reuse freed memory instead of page-faulting (wmkit.malloc)

__version__ = "0.1.0"
__all__ = ["Profile", "profile", "default_profile_name", "pick_device", "seed_everything",
           "count_parameters", "__version__"]
