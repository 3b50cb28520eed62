"""Multi-layer perceptrons on flattened pixels: no spatial prior at all."""
from __future__ import annotations

import torch.nn as nn

from ibnb.core.models import register


@register
def mlp(num_classes=10, in_channels=3, image_size=32, width=512, depth=3, dropout=0.0):
    """Plain MLP: ``depth`` hidden layers of ``width`` units (Linear → ReLU → dropout), then a linear head."""
    layers: list[nn.Module] = [nn.Flatten()]
    d_in = in_channels * image_size * image_size
    for _ in range(depth):
        layers += [nn.Linear(d_in, width), nn.ReLU(inplace=True)]
        if dropout:
            layers.append(nn.Dropout(dropout))
        d_in = width
    layers.append(nn.Linear(d_in, num_classes))
    return nn.Sequential(*layers)
