"""Small torch models for the built-in tasks: MLPs over rows, CNNs over images, fixed pre/post layers."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["MLP", "ImageCNN", "Rescale", "SmallCNN", "Standardize"]


class Standardize(nn.Module):
    """``(x - mean) / scale`` with fixed, declared constants carried in the weights (and ONNX)."""

    def __init__(self, mean: torch.Tensor, scale: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean.clone().float())
        self.register_buffer("scale", scale.clone().float())

    mean: torch.Tensor
    scale: torch.Tensor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.scale  # [B, F]


class MLP(nn.Module):
    """``features -> hidden -> hidden -> classes`` with ReLU, optional input standardization."""

    def __init__(
        self,
        num_features: int,
        num_classes: int,
        hidden: int = 64,
        standardize: Standardize | None = None,
    ) -> None:
        super().__init__()
        self.prep = standardize if standardize is not None else nn.Identity()
        self.net = nn.Sequential(
            nn.Linear(num_features, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.prep(x))  # [B, F] -> [B, C]


class SmallCNN(nn.Module):
    """A two-convolution network over square single-channel images given as flat rows."""

    def __init__(self, side: int, num_classes: int, channels: int = 16) -> None:
        super().__init__()
        self.side = side
        self.features = nn.Sequential(
            nn.Conv2d(1, channels, kernel_size=3, padding=1),  # [B, C, S, S]
            nn.ReLU(),
            nn.Conv2d(channels, 2 * channels, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # [B, 2C, S/2, S/2]
        )
        self.head = nn.Linear(2 * channels * (side // 2) ** 2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        img = x.reshape(-1, 1, self.side, self.side)  # [B, S*S] -> [B, 1, S, S]
        return self.head(torch.flatten(self.features(img), 1))  # [B, C]


class Rescale(nn.Module):
    """``x * scale + offset`` with declared constants: maps a standardized output back to its units."""

    def __init__(self, offset: torch.Tensor, scale: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("offset", offset.clone().float())
        self.register_buffer("scale", scale.clone().float())

    offset: torch.Tensor
    scale: torch.Tensor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.offset  # [B, K]


class ImageCNN(nn.Module):
    """Input scaling, two conv blocks over ``[B, C, H, W]`` images (H, W divisible by 4), an MLP head.

    ``(x - center) / scale`` is declared by the task and carried in the weights (and the ONNX), so
    devices feed raw intensities; centred inputs make the few SGD steps of a federated round count.
    The head's hidden layer holds most of the weights, which is also what lets int8 shrink the
    model: on a conv-only model of a few thousand weights the quantization nodes' fixed cost
    would dominate.
    """

    def __init__(
        self,
        in_channels: int,
        height: int,
        width: int,
        num_outputs: int,
        *,
        channels: int = 8,
        hidden: int = 64,
        center: float = 0.0,
        scale: float = 1.0,
    ) -> None:
        super().__init__()
        self.prep = Standardize(torch.tensor([center]), torch.tensor([scale]))
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, channels, kernel_size=3, padding=1),  # [B, c, H, W]
            nn.ReLU(),
            nn.MaxPool2d(2),  # [B, c, H/2, W/2]
            nn.Conv2d(channels, 2 * channels, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # [B, 2c, H/4, W/4]
        )
        self.head = nn.Sequential(
            nn.Linear(2 * channels * (height // 4) * (width // 4), hidden),  # [B, hidden]
            nn.ReLU(),
            nn.Linear(hidden, num_outputs),  # [B, K]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.features(self.prep(x)), 1))  # [B, K]
