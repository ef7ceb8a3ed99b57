"""Weight initialisation shared by HALSR-Net and the ROI regressor (their ``_init_weights``).

A code file of saved model folders (relative imports only, see ``pipeline_halsr``).
"""

import torch
from torch import nn


@torch.no_grad()
def init_conv_bn_weights(module: nn.Module) -> None:
    """He (Kaiming) normal for convolutions (fan-out, ReLU gain), zero biases; BatchNorm as identity
    (weight 1, bias 0, fresh running statistics)."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
        if getattr(module, "running_mean", None) is not None:
            module.running_mean.zero_()
            module.running_var.fill_(1.0)
            module.num_batches_tracked.zero_()
