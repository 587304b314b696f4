"""Human-normalised Atari scores, the unit of the Atari 100k results (DreamerV3 paper, Fig. / Table
"Atari 100k"; the paper reports a human-normalised mean above 1 over the 26 games).

``hns = (score - random) / (human - random)``: 0 is a uniformly random policy, 1 a human gamer. The
reference scores are the ``atari57_gamer`` table of the official DreamerV3 repository's
``baselines.yaml`` (the "human gamer" scores of the Atari-57 literature, e.g. Agent57; the Atari 100k
papers use the same numbers). They are NOT the human scores of the DQN Nature paper (Mnih et al. 2015):
Pong's human score there is 9.3, here 14.6. A test checks all 26 pairs against that file's values.
"""

from __future__ import annotations

import numpy as np

#: The 26 Atari 100k games (Kaiser et al. 2019): ale-py ROM name -> (random score, human score).
ATARI100K_GAMES: dict[str, tuple[float, float]] = {
    "alien": (227.8, 7127.7), "amidar": (5.8, 1719.5), "assault": (222.4, 742.0),
    "asterix": (210.0, 8503.3), "bank_heist": (14.2, 753.1), "battle_zone": (2360.0, 37187.5),
    "boxing": (0.1, 12.1), "breakout": (1.7, 30.5), "chopper_command": (811.0, 7387.8),
    "crazy_climber": (10780.5, 35829.4), "demon_attack": (152.1, 1971.0), "freeway": (0.0, 29.6),
    "frostbite": (65.2, 4334.7), "gopher": (257.6, 2412.5), "hero": (1027.0, 30826.4),
    "jamesbond": (29.0, 302.8), "kangaroo": (52.0, 3035.0), "krull": (1598.0, 2665.5),
    "kung_fu_master": (258.5, 22736.3), "ms_pacman": (307.3, 6951.6), "pong": (-20.7, 14.6),
    "private_eye": (24.9, 69571.3), "qbert": (163.9, 13455.0), "road_runner": (11.5, 7845.0),
    "seaquest": (68.4, 42054.7), "up_n_down": (533.4, 11693.2),
}


def human_normalized(game: str, score: float) -> float:
    """(score - random) / (human - random) for one of the 26 Atari 100k games (``pong`` or ``atari100k:pong``)."""
    name = game.split(":", 1)[-1]
    if name not in ATARI100K_GAMES:
        raise ValueError(f"no reference scores for {game!r}; Atari 100k games: {sorted(ATARI100K_GAMES)}")
    rnd, human = ATARI100K_GAMES[name]
    return (float(score) - rnd) / (human - rnd)


def human_normalized_mean(scores: dict[str, float]) -> float:
    """Mean human-normalised score over the games in ``scores`` (the paper's headline Atari 100k number)."""
    if not scores:
        raise ValueError("scores is empty; expected {game: score}")
    return float(np.mean([human_normalized(g, s) for g, s in scores.items()]))
