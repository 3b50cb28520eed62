"""LeNets of the Sparse VD paper (dense and Sparse-VD variants) and the small CNN of the Deep Weight Prior
chapter.

* ``lenet300_100``: fully-connected 784 → 300 → 100 → 10 (ReLU).
* ``lenet5_caffe``: conv 20@5×5 → max-pool 2 → conv 50@5×5 → max-pool 2 → fc 500 → fc 10 (ReLU after every
  layer but the last; no padding, as in Caffe's LeNet).
* ``dwp_cnn``: conv ``width1``@7×7 → max-pool → conv ``width2``@5×5 → max-pool → fc (the DWP chapter's source
  nets and its deterministic baseline; its variational twin is :class:`ibnb.core.models.bayesian.BayesCNN`).

The ``_svd`` variants use :class:`~ibnb.core.models.sparse_vd.LinearSVDO` / :class:`~ibnb.core.models.sparse_vd.Conv2dSVDO` for every layer.
"""
from __future__ import annotations

import torch.nn as nn

from ibnb.core.models.sparse_vd import Conv2dSVDO, LinearSVDO
from ibnb.core.models import register

#: kernel sizes of ``dwp_cnn``'s two conv layers (shared with its Bayesian twin)
DWP_KERNELS = (7, 5)


def pooled_size(size: int, *kernels: int) -> int:
    """Side of the feature map after each kernel's valid convolution followed by a 2×2 max-pool."""
    for k in kernels:
        size = (size - k + 1) // 2
    return size


def _lenet300_100(num_classes, in_channels, image_size, sparse):
    lin = LinearSVDO if sparse else nn.Linear
    d = in_channels * image_size * image_size
    return nn.Sequential(nn.Flatten(), lin(d, 300), nn.ReLU(), lin(300, 100), nn.ReLU(), lin(100, num_classes))


def _lenet5(num_classes, in_channels, image_size, sparse):
    conv, lin = (Conv2dSVDO, LinearSVDO) if sparse else (nn.Conv2d, nn.Linear)
    s = pooled_size(image_size, 5, 5)
    return nn.Sequential(conv(in_channels, 20, 5), nn.ReLU(), nn.MaxPool2d(2),
                         conv(20, 50, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         lin(50 * s * s, 500), nn.ReLU(), lin(500, num_classes))


def _register_pair(name: str, build, title: str) -> None:
    """Register ``name`` (dense) and ``name_svd`` (Sparse VD layers) built by ``build(..., sparse)``."""
    for sparse in (False, True):
        def builder(num_classes=10, in_channels=1, image_size=28, _sparse=sparse):
            return build(num_classes, in_channels, image_size, _sparse)
        builder.__name__ = builder.__qualname__ = name + ("_svd" if sparse else "")
        builder.__doc__ = f"{title} ({'Sparse VD layers' if sparse else 'dense'})."
        register(builder)


# registers lenet300_100, lenet300_100_svd, lenet5_caffe and lenet5_caffe_svd
_register_pair("lenet300_100", _lenet300_100, "LeNet-300-100")
_register_pair("lenet5_caffe", _lenet5, "LeNet-5-Caffe")


@register
def dwp_cnn(num_classes=10, in_channels=1, image_size=28, width1=16, width2=32):
    """The Deep Weight Prior chapter's small CNN (deterministic; source nets and the L2 baseline)."""
    k1, k2 = DWP_KERNELS
    s = pooled_size(image_size, k1, k2)
    return nn.Sequential(nn.Conv2d(in_channels, width1, k1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(width1, width2, k2), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(width2 * s * s, num_classes))
