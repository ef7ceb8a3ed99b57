"""Weight initialisation shared by HALSR-Net and the ROI regressor (their ``_init_weights``), and
their inference-only copies with BatchNorm folded into the convolutions
(:class:`InferenceFoldingMixin`).

A code file of saved model folders (relative imports only, see ``pipeline_halsr``).
"""

import copy
import os
from pathlib import Path

import torch
from torch import nn

from .errors import InputError


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


@torch.no_grad()
def fold_batchnorm(module: nn.Module) -> int:
    """Fold, in place, every ``BatchNorm2d`` that directly follows a ``Conv2d`` inside an
    ``nn.Sequential`` into that convolution, using the running statistics (the eval-mode function):
    ``w' = w * gamma / sqrt(var + eps)``, ``b' = (b - mean) * gamma / sqrt(var + eps) + beta``; the
    BatchNorm becomes ``nn.Identity``. Returns how many were folded. The module's function in eval
    mode is unchanged up to float rounding; its state dict is not (use :class:`InferenceFoldingMixin`'s
    copy, never fold a model you save or train)."""
    folded = 0
    for sequential in [m for m in module.modules() if isinstance(m, nn.Sequential)]:
        names = list(sequential._modules)
        for first, second in zip(names, names[1:]):
            conv, bn = sequential._modules[first], sequential._modules[second]
            if not (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats):
                continue
            # in float64, rounded once to the weights' dtype: the fold adds as little error as it can
            scale = bn.running_var.double().add(bn.eps).rsqrt()
            if bn.weight is not None:
                scale = scale * bn.weight.double()
            bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
            bias = (bias - bn.running_mean.double()) * scale + (bn.bias.double() if bn.bias is not None else 0.0)
            conv.weight.copy_(conv.weight.double() * scale.reshape(-1, 1, 1, 1))
            if conv.bias is None:
                conv.bias = nn.Parameter(bias.to(conv.weight.dtype), requires_grad=False)
            else:
                conv.bias.copy_(bias)
            sequential._modules[second] = nn.Identity()
            folded += 1
    return folded


def weights_signature(model) -> tuple:
    """Cheap identity of a model's current weights: storage and version counter of every parameter
    and buffer (an in-place change, ``load_state_dict`` or a move to another device changes it)."""
    if model is None:
        return ()
    return tuple((t.data_ptr(), t._version) for t in list(model.parameters()) + list(model.buffers()))


def _new_file_mode() -> int:
    """The mode of a newly created file under the process's umask (a copy of
    ``halsr_hf.atomic.default_file_mode``: this file travels alone with saved model code)."""
    try:  # Linux: read it without changing it
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


class InferenceFoldingMixin:
    """For both models' ``PreTrainedModel`` bases: :meth:`fused_for_inference` returns an
    inference-only copy with BatchNorm folded (:func:`fold_batchnorm`); the model itself, its state
    dict and what it saves are unchanged. The copy cannot be saved or put back in training mode: its
    weights are not the trainable ones."""

    #: True on the copies made by :meth:`fused_for_inference`
    is_fused_for_inference = False

    def fused_for_inference(self):
        """A copy of this model in eval mode with BatchNorm folded into the preceding convolutions
        (same function to float rounding: about 1e-5 on logits in the tens). ``save_pretrained``,
        ``push_to_hub`` and ``train()`` refuse it."""
        copied = copy.deepcopy(self).eval()
        fold_batchnorm(copied)
        copied.requires_grad_(False)
        copied.is_fused_for_inference = True
        return copied

    def _refuse_if_fused(self, what: str) -> None:
        if self.is_fused_for_inference:
            raise InputError(f"{what}: this is an inference-only copy with BatchNorm folded into the convolutions "
                             "(fused_for_inference()); save or train the original model instead")

    def save_pretrained(self, save_directory, *args, **kwargs):
        """``PreTrainedModel.save_pretrained``, then the weight files get the permissions of any file
        the user creates (``0o666 & ~umask``): safetensors (0.8) writes them through a temporary file
        of mode 0600, so a fine-tuned ``model.safetensors`` was unreadable to the user's group."""
        self._refuse_if_fused("save_pretrained")
        result = super().save_pretrained(save_directory, *args, **kwargs)
        mode = _new_file_mode()
        for path in Path(save_directory).glob("model*.safetensors*"):
            if path.is_file() and path.stat().st_mode & 0o777 != mode:
                os.chmod(path, mode)
        return result

    def train(self, mode: bool = True):
        if mode:
            self._refuse_if_fused("train()")
        return super().train(mode)
