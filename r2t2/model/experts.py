"""Vision experts: open_clip towers that each look at the image their own way."""
from __future__ import annotations

from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F
from open_clip.model import CLIPVisionCfg, _build_vision_tower
from safetensors.torch import load_file
from torch import Tensor, nn

from r2t2.model.config import ExpertSpec, ModelConfigError

_MEAN = torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1)
_STD = torch.tensor([0.25, 0.25, 0.25]).view(1, 3, 1, 1)


def tower_config(spec: ExpertSpec, index: int) -> CLIPVisionCfg:
    """The named open_clip architecture's vision config with the expert's own fields laid over it."""
    base: dict = {}
    if spec.architecture is not None:
        found = open_clip.get_model_config(spec.architecture)
        if found is None:
            raise ModelConfigError(f"experts[{index}].architecture",
                                   f"{spec.architecture!r} is not an open_clip architecture "
                                   f"(see open_clip.list_models())")
        base = dict(found["vision_cfg"])
    try:
        return CLIPVisionCfg(**{**base, **spec.tower})
    except TypeError as err:
        raise ModelConfigError(f"experts[{index}].tower", f"not an open_clip vision config: {err}") from None


class VisionExpert(nn.Module):
    """An open_clip vision tower with its own input resolution and colour handling."""

    def __init__(self, spec: ExpertSpec, feature_dim: int, index: int = 0, root: Path | None = None) -> None:
        super().__init__()
        self.spec = spec
        config = tower_config(spec, index)
        try:
            self.tower = _build_vision_tower(feature_dim, config)
        except Exception as err:  # open_clip/timm refuse a config with many error types
            raise ModelConfigError(f"experts[{index}].tower", f"open_clip cannot build it: {err}") from None
        if spec.weights is not None:
            self._load_weights(spec.weights, index, root)

    def _load_weights(self, weights: str, index: int, root: Path | None) -> None:
        path = Path(weights) if root is None else root / weights
        if not path.is_file():
            raise ModelConfigError(f"experts[{index}].weights", f"no such file {path}")
        try:
            missing, unexpected = self.tower.load_state_dict(load_file(str(path)), strict=False)
        except RuntimeError as err:  # a tensor of another shape
            raise ModelConfigError(f"experts[{index}].weights", f"{path} does not fit the tower: "
                                                                f"{str(err).splitlines()[-1].strip()}") from None
        if missing or unexpected:
            raise ModelConfigError(f"experts[{index}].weights", f"{path} does not fit the tower: "
                                                                f"missing={missing[:3]} unexpected={unexpected[:3]}")

    def forward(self, pixels: Tensor) -> Tensor:
        """pixels: [B, 3, H, W] in [0, 1] at any size -> pooled features [B, feature_dim]."""
        x = pixels
        if x.shape[-1] != self.spec.image_size or x.shape[-2] != self.spec.image_size:
            x = F.interpolate(x, size=(self.spec.image_size,) * 2, mode="bilinear", antialias=True,
                              align_corners=False)
        if self.spec.color == "gray":
            luma = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)
            x = luma.expand(-1, 3, -1, -1)
        return self.tower((x - _MEAN.to(x.device)) / _STD.to(x.device))


class ExpertBank(nn.Module):
    """All experts together; their pooled features are what reference indexes cache."""

    def __init__(self, specs: tuple[ExpertSpec, ...], feature_dim: int, root: Path | None = None) -> None:
        super().__init__()
        self.experts = nn.ModuleList(VisionExpert(s, feature_dim, i, root) for i, s in enumerate(specs))

    def forward(self, pixels: Tensor) -> Tensor:
        """[B, 3, H, W] -> [B, E, feature_dim]."""
        return torch.stack([expert(pixels) for expert in self.experts], dim=1)
