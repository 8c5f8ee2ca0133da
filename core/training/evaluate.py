"""Validation with the competition metric on scenarios built from the held-out fold."""

from __future__ import annotations

from typing import Callable, Sequence

from core.metric import random_baseline, score_scenarios
from core.retrieval import embed_images, predict
from core.scenarios import Scenario


def evaluate(model, loader, image_ids: Sequence[str], scenarios: Sequence[Scenario], steps: Sequence[Callable],
             device, tta_flip: bool, gather: Callable | None = None, progress: bool = False,
             autocast_dtype=None, details: bool = False, viewpoints: dict | None = None, files: dict | None = None):
    """Embed every image of ``loader`` once, rank every scenario, score it. With ``details``:
    ``(result, per-query table, embeddings [N, E] in the order of image_ids)``."""
    emb, _ = embed_images(model, loader, device, tta_flip, gather=gather, num_images=len(image_ids), progress=progress,
                          autocast_dtype=autocast_dtype)
    index = {img: i for i, img in enumerate(image_ids)}
    scored = score_scenarios(predict(scenarios, emb, index, steps, viewpoints, files), scenarios, details=details)
    return (*scored, emb) if details else scored


class Validation:
    """The held-out fold: its loader, scenarios, postprocess steps and random baseline. Calling it evaluates a
    model (all processes embed, the metric is computed on the gathered embeddings) and returns
    ``(result, per-query table, embeddings)``; ``result`` carries ``epoch``, ``random`` and ``lift``."""

    def __init__(self, cfg, data, val_df, scenarios, steps, accelerator):
        from torch.utils.data import DataLoader

        from core.training.health import lift

        self.cfg, self.scenarios, self.steps, self.accelerator, self._lift = cfg, scenarios, steps, accelerator, lift
        self.loader = DataLoader(data.eval_dataset(val_df), batch_size=int(cfg.infer.batch_size), shuffle=False,
                                 num_workers=int(cfg.data.num_workers))
        self.image_ids = list(val_df["image_id"])
        self.viewpoints = dict(zip(val_df["image_id"], val_df["viewpoint"])) if "viewpoint" in val_df.columns else None
        self.files = dict(zip(val_df["image_id"], val_df["file"])) if "file" in val_df.columns else None
        self.baseline = random_baseline(scenarios, int(cfg.seed))
        # evaluate in the precision the model trains in (autocast on accelerators only; CPU stays float32)
        self.dtype = None if accelerator.device.type == "cpu" else _autocast_dtype(cfg.train.mixed_precision)

    def __call__(self, model, epoch: int):
        acc = self.accelerator
        result, per_query, emb = evaluate(
            acc.unwrap_model(model), self.loader, self.image_ids, self.scenarios, self.steps, acc.device,
            bool(self.cfg.infer.tta_flip), gather=acc.gather_for_metrics, progress=acc.is_local_main_process,
            autocast_dtype=self.dtype, details=True, viewpoints=self.viewpoints, files=self.files)
        result.update(epoch=epoch, num_processes=acc.num_processes, random=self.baseline,
                      lift=self._lift(result["mAP"], self.baseline["mAP"]))
        return result, per_query, emb


def _autocast_dtype(mixed_precision: str):
    import torch

    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(mixed_precision)


def summary_line(result: dict) -> str:
    """``val mAP 0.4321 random 0.0500 lift 8.64x | scenario mAP ...``: an evaluation in one log line."""
    lifted = "n/a" if result.get("lift") is None else f"{result['lift']:.2f}x"
    return (f"val mAP {result['mAP']:.4f} random {result['random']['mAP']:.4f} lift {lifted} | "
            + " ".join(f"{k} {v:.3f}" for k, v in result["scenarios"].items()))
