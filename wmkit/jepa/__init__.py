"""Stage 4: V-JEPA and an action-conditioned JEPA that plans (see ``book/stage4/vjepa.md``).

* :mod:`wmkit.jepa.masks`    -- multiblock 3-D tube masks (V-JEPA's official config).
* :mod:`wmkit.jepa.vjepa`    -- tubelet ViT encoder, EMA target, predictor with mask tokens, L1 loss, collapse stats.
* :mod:`wmkit.jepa.tworooms` -- the Two-Rooms navigation task (PLDM / EB-JEPA / stable-worldmodel specification).
* :mod:`wmkit.jepa.ac`       -- action-conditioned, frame-causal predictor (V-JEPA 2-AC), SIGReg (LeWM), CEM planning.
* :mod:`wmkit.jepa.train`    -- training loops; :mod:`wmkit.jepa.pretrain` -- torchrun / DDP / FSDP2 pretraining.
* :mod:`wmkit.jepa.probes`   -- linear and attentive probes and the comparison with generative world models.
"""

from wmkit.jepa.masks import VJEPA_MASKS, MaskSpec, MultiBlock3D
from wmkit.jepa.vjepa import VJEPA, VJEPAConfig, collapse_stats, effective_rank, ema_update, momentum_at

__all__ = ["VJEPA_MASKS", "MaskSpec", "MultiBlock3D", "VJEPA", "VJEPAConfig", "collapse_stats", "effective_rank",
           "ema_update", "momentum_at"]
