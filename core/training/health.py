"""Is a run learning? Checks over its evaluation history, each with a hint on what to change.

A run can train for minutes and keep weights no better than a random ranking without anything
failing (issue #7). ``learning_warnings`` reads the history the runner keeps (one entry per
evaluation: ``epoch``, ``mAP``, ``random`` mAP and the epoch's mean ``train_loss``) and returns what
looks wrong. Every check waits for ``MIN_EVALUATIONS`` evaluations, so a short smoke run is not judged.
"""

from __future__ import annotations

from typing import Sequence

MIN_EVALUATIONS = 3
NEAR_RANDOM = 1.15  # best mAP at most this many times random
MIN_LOSS_DROP = 0.05  # training loss must fall at least this fraction below epoch 1's

HINTS = {
    "near_random": "the model ranks no better than chance: raise the learning rate (or shorten the warm-up), "
                   "lighten augmentation (a model trained from scratch on small images may never fit heavy "
                   "augmentation), or check that whale_id labels match the photos",
    "best_is_first": "validation peaked at the first evaluation: lower the learning rate, lighten augmentation, "
                     "or use more training data; later epochs may be overfitting or diverging",
    "loss_flat": "the training loss has barely moved: raise the learning rate, lighten augmentation, "
                 "or check the labels; with few photos per whale, train longer",
}


def lift(mAP: float, random_mAP: float) -> float | None:
    """``mAP / random_mAP``; None when the random baseline is 0."""
    return mAP / random_mAP if random_mAP > 0 else None


def learning_warnings(history: Sequence[dict]) -> list[dict]:
    """``[{"code", "message", "hint"}]`` for a run whose evaluations say it is not learning."""
    if len(history) < MIN_EVALUATIONS:
        return []
    best = max(history, key=lambda h: h["mAP"])
    out = []
    rand = best.get("random_mAP", 0.0)
    if best["mAP"] <= NEAR_RANDOM * rand:
        out.append(("near_random", f"best validation mAP {best['mAP']:.4f} after {len(history)} evaluations is "
                                   f"within {NEAR_RANDOM - 1:.0%} of a random ranking's {rand:.4f}"))
    if best is history[0]:
        out.append(("best_is_first", f"the best validation mAP ({best['mAP']:.4f}) came at the first evaluation "
                                     f"(epoch {best['epoch']}) and none of the {len(history) - 1} after it beat it"))
    losses = [h.get("train_loss") for h in history]
    if losses[0] is not None and losses[-1] is not None and losses[0] > 0:
        drop = 1 - losses[-1] / losses[0]
        if drop < MIN_LOSS_DROP:
            out.append(("loss_flat", f"training loss fell {drop:.1%} from epoch {history[0]['epoch']} "
                                     f"({losses[0]:.3f}) to epoch {history[-1]['epoch']} ({losses[-1]:.3f}), "
                                     f"less than {MIN_LOSS_DROP:.0%}"))
    return [{"code": code, "message": message, "hint": HINTS[code]} for code, message in out]


def report_health(out, warned: list) -> list[dict]:
    """Rewrite ``out/metrics.json`` as the best evaluation so far plus the run's current ``warnings``;
    log each warning the first time it holds (its code is then added to ``warned``)."""
    import logging

    from core.training.runs import history as read_history, write_json

    entries = read_history(out)
    if not entries:
        return []
    for h in entries:  # the checks compare against the random ranking of the same scenarios
        h["random_mAP"] = h.get("random", {}).get("mAP", 0.0)
    warnings = learning_warnings(entries)
    for w in warnings:
        if w["code"] not in warned:
            logging.getLogger("whaleid").warning("NOT LEARNING? %s. Hint: %s", w["message"], w["hint"])
            warned.append(w["code"])
    best = max(entries, key=lambda h: h["mAP"])
    best.pop("random_mAP", None)
    best["warnings"] = warnings
    write_json(out / "metrics.json", best)
    return warnings
