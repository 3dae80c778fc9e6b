"""Encoders with weights: the default/local/random weights contract for torch models.

``weights="default"`` loads the library's own weights from the torch hub cache
(downloading only when online; ``DICCAE_OFFLINE=1`` forbids it), a path loads a local
checkpoint (recorded by its sha256), ``"random"`` builds a seeded untrained model
(recorded as not pretrained).  A missing or unfitting file raises
:class:`~featstore.errors.WeightsUnavailable` saying where to put it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

from featstore.errors import WeightsUnavailable, torch_load_problem
from featstore.extract.encoders.base import Encoder
from featstore.store.schema import sha256_file

RANDOM_SEED = 0


def offline() -> bool:
    return os.environ.get("DICCAE_OFFLINE", "") not in ("", "0", "false", "False")


def _weights_help(name: str, modality: str, url: str, cache: Path, reason: str) -> str:
    return (
        f"pretrained weights for encoder {name!r} are not available: {reason}.\n"
        f"  Download {url}\n"
        f"  and put it at {cache}\n"
        f"  (the torch hub cache; set TORCH_HOME to move it), or pass a local checkpoint with "
        f"--{modality}-weights /path/to/{cache.name}; --{modality}-weights random gives an untrained "
        f"model for testing (recorded as not pretrained)."
    )


def load_hub_state_dict(name: str, modality: str, url: str, *, check_hash: bool) -> dict[str, Any]:
    """The library's weights from the torch hub cache, downloading only when online."""
    import torch

    cache = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)

    def unavailable(reason: str) -> WeightsUnavailable:
        return WeightsUnavailable(_weights_help(name, modality, url, cache, reason))

    if cache.is_file():
        try:
            return torch.load(cache, weights_only=True, map_location="cpu")
        except Exception as exc:
            raise unavailable(
                f"the cached file is unreadable ({torch_load_problem(exc)})"
            ) from None
    if offline():
        raise unavailable("not in the cache and DICCAE_OFFLINE is set")
    try:
        return torch.hub.load_state_dict_from_url(
            url, map_location="cpu", progress=False, check_hash=check_hash, weights_only=True
        )
    except Exception as exc:
        raise unavailable(
            f"not in the cache and the download failed ({type(exc).__name__}: {exc})"
        ) from None


def load_local_checkpoint(path: Path) -> dict[str, Any]:
    """A state dict from a local file: plain, or under ``state_dict``/``model``; ``module.`` stripped."""
    import torch

    try:
        obj = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:
        raise WeightsUnavailable(
            f"cannot load checkpoint {path}: {torch_load_problem(exc)}"
        ) from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj:
        raise WeightsUnavailable(f"{path} does not hold a state dict (got {type(obj).__name__})")
    return {(k[7:] if k.startswith("module.") else k): v for k, v in obj.items()}


@contextlib.contextmanager
def seeded() -> Iterator[None]:
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_SEED)
        yield


class TorchEncoder(Encoder):
    """An ``nn.Module`` encoder with the default/local/random weights contract."""

    weights_url: ClassVar[str] = ""
    check_hash: ClassVar[bool] = True

    def __init__(self, *, weights: str = "default", device: str = "cpu", **overrides: Any):
        super().__init__(weights=weights, device=device, **overrides)
        import torch

        # find the weights first, so a missing file fails before building a large model
        state, source = None, ""
        if weights == "random":
            self.weights_id, self.pretrained = "random", False
        elif weights == "default":
            state = load_hub_state_dict(
                self.name, self.modality, self.weights_url, check_hash=self.check_hash
            )
            source = self.default_weights_name
            self.weights_id, self.pretrained = self.default_weights_name, True
        else:
            path = Path(weights).expanduser()
            if not path.is_file():
                raise WeightsUnavailable(
                    f"--{self.modality}-weights {weights!r}: no such file (use 'default', 'random' or a checkpoint path)"
                )
            state, source = load_local_checkpoint(path), str(path)
            self.weights_id, self.pretrained = f"sha256:{sha256_file(path)}", True
        with seeded():
            model = self.build()
        if state is not None:
            self._load_state(model, state, source)
        self.model = self.adapt(model).eval().to(device)
        self._torch = torch
        #: bf16 autocast on CUDA (float32 weights, float32 embeddings out); None = float32.
        #: Measured by scripts/gpu_check.sh against float32 (cosine similarity of embeddings).
        self.amp_dtype = torch.bfloat16 if str(device).startswith("cuda") else None

    def autocast(self):
        """Mixed-precision context for a forward pass on this encoder's device."""
        import contextlib

        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return self._torch.autocast("cuda", dtype=self.amp_dtype)

    @staticmethod
    def _load_state(model, state: dict[str, Any], source: str) -> None:
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise WeightsUnavailable(
                f"weights from {source} do not fit the model: {str(exc)[:500]}"
            ) from None

    def build(self):
        raise NotImplementedError

    def adapt(self, model):
        """Turn the classifier into an embedding model (drop the head)."""
        return model
