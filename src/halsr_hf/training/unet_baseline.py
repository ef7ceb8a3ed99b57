"""A plain 2D U-Net, the baseline HALSR-Net is compared with (``train.py --architecture unet``).

Same widths as a HALSR preset (``hidden_sizes``), same input/labels, same BCE + Dice loss
(:func:`halsr_hf.modeling_halsr.bce_dice_loss`), so that only the architecture differs: encoder
stages of two 3x3 conv + BatchNorm + ReLU with 2x2 max-pooling, decoder stages of a 2x2 transposed
conv, concatenation of the skip and the same conv block, a 1x1 head. No attention, no HAPM, no
reconstruction branch, no dropout.

Deliberately not registered with the ``Auto*`` classes: load it with
``UnetForSemanticSegmentation.from_pretrained(folder)`` (``benchmarks/unet.py`` re-exports it).
"""

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import SemanticSegmenterOutput

from ..configuration_halsr import DEFAULT_ID2LABEL, PRESETS
from ..modeling_halsr import ConvBlock, bce_dice_loss


class UnetConfig(PretrainedConfig):
    """Configuration of :class:`UnetForSemanticSegmentation` (fields as in ``HalsrConfig``)."""

    model_type = "halsr_unet_baseline"

    def __init__(
        self,
        num_channels: int = 1,
        hidden_sizes: list | None = None,
        loss_alpha: float = 0.5,
        loss_beta: float = 0.5,
        dice_smooth: float = 1.0,
        semantic_loss_ignore_index: int = 255,
        image_size: int = 128,
        **kwargs,
    ):
        if "id2label" not in kwargs and "num_labels" not in kwargs:
            kwargs["id2label"] = dict(DEFAULT_ID2LABEL)
        if "id2label" in kwargs and "label2id" not in kwargs:
            kwargs["label2id"] = {v: int(k) for k, v in kwargs["id2label"].items()}
        super().__init__(**kwargs)
        self.num_channels = num_channels
        self.hidden_sizes = list(hidden_sizes) if hidden_sizes is not None else list(PRESETS["small"]["hidden_sizes"])
        self.loss_alpha = loss_alpha
        self.loss_beta = loss_beta
        self.dice_smooth = dice_smooth
        self.semantic_loss_ignore_index = semantic_loss_ignore_index
        self.image_size = image_size

    @classmethod
    def from_preset(cls, name: str, **kwargs) -> "UnetConfig":
        """The widths of HALSR-Net's preset ``name``."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
        return cls(hidden_sizes=PRESETS[name]["hidden_sizes"], **kwargs)


class UnetForSemanticSegmentation(PreTrainedModel):
    config_class = UnetConfig
    base_model_prefix = "unet"
    main_input_name = "pixel_values"
    input_modalities = ("image",)

    def __init__(self, config: UnetConfig):
        super().__init__(config)
        sizes = config.hidden_sizes
        self.encoder = nn.ModuleList(
            [ConvBlock(config.num_channels if i == 0 else sizes[i - 1], width) for i, width in enumerate(sizes)]
        )
        self.upsample = nn.ModuleList([nn.ConvTranspose2d(sizes[i + 1], sizes[i], 2, stride=2) for i in reversed(range(len(sizes) - 1))])
        self.decoder = nn.ModuleList([ConvBlock(2 * sizes[i], sizes[i]) for i in reversed(range(len(sizes) - 1))])
        self.head = nn.Conv2d(sizes[0], config.num_labels, 1)
        self.post_init()

    @torch.no_grad()
    def _init_weights(self, module):
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

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None, return_dict: bool | None = None, **kwargs):
        height, width = pixel_values.shape[-2:]
        multiple = 2 ** (len(self.config.hidden_sizes) - 1)
        x = F.pad(pixel_values, (0, (-width) % multiple, 0, (-height) % multiple))
        skips = []
        for i, stage in enumerate(self.encoder):
            x = stage(F.max_pool2d(x, 2) if i > 0 else x)
            skips.append(x)
        for up, block, skip in zip(self.upsample, self.decoder, reversed(skips[:-1])):
            x = block(torch.cat([skip, up(x)], dim=1))
        logits = self.head(x)[..., :height, :width]
        loss = None
        if labels is not None:
            loss = bce_dice_loss(
                logits, labels, alpha=self.config.loss_alpha, beta=self.config.loss_beta,
                smooth=self.config.dice_smooth, ignore_index=self.config.semantic_loss_ignore_index,
            )
        if return_dict is False:
            return ((loss, logits) if loss is not None else (logits,))
        return SemanticSegmenterOutput(loss=loss, logits=logits)
