"""Vision experts: open_clip towers that each look at the image their own way."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from open_clip.model import CLIPVisionCfg, _build_vision_tower
from torch import Tensor, nn

from r2t2.model.config import ExpertSpec

_MEAN = torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1)
_STD = torch.tensor([0.25, 0.25, 0.25]).view(1, 3, 1, 1)


class VisionExpert(nn.Module):
    """An open_clip vision tower with its own input resolution and colour handling."""

    def __init__(self, spec: ExpertSpec, feature_dim: int) -> None:
        super().__init__()
        self.spec = spec
        self.tower = _build_vision_tower(feature_dim, CLIPVisionCfg(**spec.tower))

    def forward(self, pixels: Tensor) -> Tensor:
        """pixels: [B, 3, H, W] in [0, 1] at any size -> pooled features [B, feature_dim]."""
        x = pixels
        if x.shape[-1] != self.spec.image_size or x.shape[-2] != self.spec.image_size:
            x = F.interpolate(x, size=(self.spec.image_size,) * 2, mode="bilinear", antialias=True,
                              align_corners=False)
        if self.spec.grayscale:
            luma = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)
            x = luma.expand(-1, 3, -1, -1)
        return self.tower((x - _MEAN) / _STD)


class ExpertBank(nn.Module):
    """All experts together; their pooled features are what reference indexes cache."""

    def __init__(self, specs: tuple[ExpertSpec, ...], feature_dim: int) -> None:
        super().__init__()
        self.experts = nn.ModuleList(VisionExpert(s, feature_dim) for s in specs)

    def forward(self, pixels: Tensor) -> Tensor:
        """[B, 3, H, W] -> [B, E, feature_dim]."""
        return torch.stack([expert(pixels) for expert in self.experts], dim=1)
