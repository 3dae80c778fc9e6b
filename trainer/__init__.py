"""diccae trainer: the confusion-aware audio-visual model trained on store shards.

Reads feature-store shards and label files only; it never imports extraction code
or the CLI.  Public API (other packages import these from ``trainer`` or from the
module named beside each):

* phases (:mod:`trainer.phases`): ``pretrain``, ``finetune``, ``saved_run_config``;
  ``launch_local`` (:mod:`trainer.launch`) runs a phase as N local DDP ranks;
* evaluation: ``evaluate`` (:mod:`trainer.evaluate`), ``infer`` and ``top1``
  (:mod:`trainer.inference`), ``ablate`` (:mod:`trainer.ablate`);
* configuration: ``TrainConfig`` (:mod:`trainer.config`), the option table
  ``TRAIN_OPTIONS`` and ``build_config`` (:mod:`trainer.options`);
* results: ``RunSummary`` (:mod:`trainer.loop`), ``write_fused_features``
  (:mod:`trainer.run_io`).

Long-running functions take ``progress: featstore.progress.ProgressFn | None``;
errors are :mod:`featstore.errors` types (a non-finite loss is ``TrainingDiverged``).
Names resolve lazily, so ``import trainer`` does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "pretrain": "trainer.phases",
    "finetune": "trainer.phases",
    "saved_run_config": "trainer.phases",
    "launch_local": "trainer.launch",
    "evaluate": "trainer.evaluate",
    "infer": "trainer.inference",
    "top1": "trainer.inference",
    "ablate": "trainer.ablate",
    "TrainConfig": "trainer.config",
    "TRAIN_OPTIONS": "trainer.options",
    "build_config": "trainer.options",
    "RunSummary": "trainer.loop",
    "write_fused_features": "trainer.run_io",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'trainer' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
