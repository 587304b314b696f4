"""``wmkit genie train | train-tokenizer | train-lam | train-dynamics | evaluate | playthrough``.

Genie's order (Bruce et al. 2024, section 2.1): the tokenizer and the LAM train independently on the same
video; the dynamics model trains on their frozen outputs::

    wmkit genie train-tokenizer        # -> runs/genie/tokenizer
    wmkit genie train-lam              # -> runs/genie/lam
    wmkit genie train-dynamics         # -> runs/genie/dynamics (reads the two above)
    wmkit genie train                  # all three, then `evaluate`
    wmkit genie evaluate               # held-out PSNR, LAM usage + confusion, Delta_t PSNR -> summary.json
    wmkit genie playthrough            # real | generated | error scrubber -> playthrough.html

Sizes default to the active profile (WMKIT_PROFILE=smoke|cpu|gpu); every option is in ``--help``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from wmkit.config import parse_config
from wmkit.genie import train as T


def _load_tok_lam(cfg: T.GenieConfig):
    from wmkit.checkpoint import checkpoint_exists, load_state
    from wmkit.genie.lam import LatentActionModel
    from wmkit.genie.tokenizer import VideoTokenizer

    tok = VideoTokenizer(T.tokenizer_config(cfg))
    lam = LatentActionModel(T.lam_config(cfg))
    for name, m in (("tokenizer", tok), ("lam", lam)):
        path = Path(cfg.run_dir) / name / "ckpt" / "latest"
        if not checkpoint_exists(path):
            raise FileNotFoundError(f"{path}: no trained {name} in this run folder; run `wmkit genie train-{name}` "
                                    f"first (or `wmkit genie train`)")
        m.load_state_dict(load_state(path)["model"])
    return tok.eval(), lam.eval()


def evaluate(cfg: T.GenieConfig) -> dict:
    cfg = T.fill(cfg)
    tok, lam, dyn, _ = T.load_models(cfg.run_dir, cfg.device)
    data = T.load_episodes(cfg)
    held = T.tokenize_episodes(tok, lam, data["heldout"])
    P = __import__("wmkit").profile().genie
    e_tok = T.eval_tokenizer(tok, data["heldout"])
    e_lam = T.eval_lam(lam, data["heldout"])
    e_dyn = T.eval_dynamics(dyn, tok, held, horizon=P.eval_horizon, starts_per_episode=P.eval_starts, seed=cfg.seed)
    summary = {"tokenizer_psnr_heldout": e_tok["psnr"], "tokenizer_codes_live": e_tok["codes_live"],
               "lam_codes_live": e_lam["codes_live"], "lam_perplexity": e_lam["codes_perplexity"],
               "lam_usage": [float(u) for u in e_lam["usage"]], "lam_decoder_psnr_gain": e_lam["decoder_psnr_gain"],
               "lam_confusion": e_lam["confusion"].tolist(),
               "dyn_psnr_inferred": [float(v) for v in e_dyn["psnr_inferred"]],
               "dyn_psnr_random": [float(v) for v in e_dyn["psnr_random"]],
               "dyn_psnr_tokenizer": [float(v) for v in e_dyn["psnr_tokenizer"]],
               "delta_psnr": e_dyn["delta_psnr"], "delta_psnr_t": e_dyn["horizon"], "samples": e_dyn["samples"]}
    # what each code does: the scroll the LAM decoder and the dynamics model draw under it (the notebook's tables)
    from wmkit.genie.play import distinct_effects, effect_table, lam_effect_table

    lt = lam_effect_table(lam, data["heldout"], frames=P.effect_frames, seed=cfg.seed)
    eff = effect_table(tok, dyn, data["heldout"], frames=P.effect_frames, seed=cfg.seed)
    threshold = max(0.02, float(eff["resample"].max()))  # MaskGIT samples: above the resampling difference
    summary.update({"lam_motion_confusion": e_lam["motion_confusion"].tolist(),
                    "lam_decoder_draws": lt["motion"].tolist(),
                    "lam_distinct_effects": distinct_effects(lt["pairwise"], 0.02),
                    "dyn_draws": eff["motion"].tolist(),
                    "dyn_distinct_effects": distinct_effects(eff["pairwise"], threshold),
                    "dyn_effect_threshold": threshold})
    out = Path(cfg.run_dir) / "summary.json"
    out.write_text(json.dumps(summary, indent=1))
    print(json.dumps({k: v for k, v in summary.items() if k != "lam_confusion"}))
    return summary


def playthrough(cfg: T.GenieConfig) -> str:
    from wmkit.genie.play import playthrough as play
    from wmkit.widgets import Scrubber, abs_error

    cfg = T.fill(cfg)
    tok, lam, dyn, _ = T.load_models(cfg.run_dir, cfg.device)
    ep = T.load_episodes(cfg)["heldout"][0]
    P = __import__("wmkit").profile().genie
    r = play(tok, lam, dyn, ep, frames=min(P.play_frames, len(ep["frames"]) - 1), seed=cfg.seed)
    s = Scrubber({"real": r["real"], "generated": r["generated"], "|error|": abs_error(r["real"], r["generated"])},
                 series={"latent action": r["latent"], "true action": r["true"], "PSNR dB": r["psnr"]},
                 title="Genie playthrough (held-out episode)")
    path = str(Path(cfg.run_dir) / "playthrough.html")
    s.save_html(path)
    print(f"{path}: mean PSNR {np.nanmean(r['psnr']):.2f} dB over {len(r['psnr']) - 1} generated frames")
    return path


def _train_tokenizer(cfg):
    cfg = T.fill(cfg)
    T.train_tokenizer(cfg, T.load_episodes(cfg))


def _train_lam(cfg):
    cfg = T.fill(cfg)
    T.train_lam(cfg, T.load_episodes(cfg))


def _train_dynamics(cfg):
    cfg = T.fill(cfg)
    tok, lam = _load_tok_lam(cfg)
    data = T.load_episodes(cfg)
    tok_data = {k: T.tokenize_episodes(tok, lam, v) for k, v in data.items()}
    tok_data["vocab"] = tok.vocab
    T.train_dynamics(cfg, tok_data)


def _train(cfg):
    T.train_all(cfg)
    evaluate(cfg)


COMMANDS = {
    "train": _train,
    "train-tokenizer": _train_tokenizer,
    "train-lam": _train_lam,
    "train-dynamics": _train_dynamics,
    "evaluate": evaluate,
    "playthrough": playthrough,
}


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(__doc__)
        if argv and argv[0] not in ("-h", "--help"):
            raise SystemExit(f"wmkit genie: unknown command {argv[0]!r}; one of {', '.join(COMMANDS)}")
        return
    cfg = parse_config(T.GenieConfig, argv[1:], prog=f"wmkit genie {argv[0]}")
    COMMANDS[argv[0]](cfg)
