"""HALSR-Net: encoder-decoder with Hybrid Attention Pooling Modules, attention gates and a
latent-space reconstruction branch (paper section 3.2).

Layout (``L = len(config.hidden_sizes)``, 5 by default)::

    x ─ stage1 ─ pool ─ stage2 ─ pool ─ ... ─ stageL (bottleneck) ─ HAPM ─ z (latent)
                                                                          │
        decoder block i (i = L-1 .. 1): up(z) ─ attention gate(skip_i) ─ conv block ─ HAPM
                                                                          │
        logits = head(decoder output) + reconstruction(z)

Choices where the paper is vague or inconsistent (also listed in the README):

* **Filters.** The paper lists 64..1024 filters and reports 10.7M parameters; both cannot hold.
  Widths are a config field with presets (``configuration_halsr.PRESETS``).
* **Encoder stage** = two 3x3 conv + BatchNorm + ReLU; 2x2 max-pooling between stages. Dropout
  (``nn.Dropout2d``) after the deepest ``num_dropout_stages`` stages.
* **Attention gate (eqs. 2-5).** The paper writes ``UP(F_l)`` for the encoder feature, which is
  already at the higher resolution. We upsample the decoder feature ``F_h`` first (transposed
  conv, the decoder's own upsampling), so both inputs share a resolution and ``UP`` only aligns
  odd sizes. ``F_H = Conv1x1(F_h)``, ``F_L = Conv1x1(F_l)``, ``F_sigma = sigmoid(Conv1x1(ReLU(F_H
  + F_L)))`` (one map), ``F_out = Concat(F_sigma * F_l, F_H)``: eq. (5)'s ``Conv1x1(F_h)`` is the
  same ``F_H`` of eq. (2).
* **HAPM.** Four parallel branches on the same input: ASPP (1x1 + dilated 3x3 convs), SPP
  (adaptive average pooling to ``spp_bins`` grids, 1x1 conv, bilinear upsampling), CBAM-style
  channel attention (avg+max pooled MLP) and spatial attention (7x7 conv on channel mean/max).
  Outputs are concatenated, fused by 1x1 conv + BatchNorm + ReLU and added to the input
  (residual; the paper does not say how the branches are fused).
* **Reconstruction (section 3.2.3).** ``z`` is multiplied by a sigmoid 1x1-conv attention map,
  then squeeze-and-excite, then a 1x1 conv to ``num_labels`` maps, bilinear upsampling to the
  output size, and element-wise addition to the decoder logits. We apply the 1x1 conv before the
  upsampling: both are linear and bilinear weights sum to one, so the result is identical and
  the full-resolution tensor has ``num_labels`` channels instead of ``hidden_sizes[-1]``. The
  paper's softmax is applied once, to the sum (adding a probability map to logits is ill-posed).
* **Loss (eqs. 6-8)** on softmax probabilities against one-hot labels: ``alpha * BCE + beta *
  Dice``; Dice is computed per class over the whole batch and averaged over classes (background
  included); pixels equal to ``semantic_loss_ignore_index`` are excluded from both terms.
* **Any input size.** Inputs are zero-padded (bottom/right) to a multiple of ``2 ** (L - 1)`` and
  the logits cropped back, so logits always have the input's spatial size.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import SemanticSegmenterOutput
from transformers.utils import ModelOutput

from .configuration_halsr import HalsrConfig
from .errors import InputError, check_no_unknown_kwargs
from .weight_init import InferenceFoldingMixin, init_conv_bn_weights


class ConvBlock(nn.Module):
    """Two 3x3 convolutions, each followed by BatchNorm and ReLU."""

    def __init__(self, in_channels: int, out_channels: int, dropout_rate: float = 0.0):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )
        self.dropout = nn.Dropout2d(dropout_rate) if dropout_rate > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.layers(x))


def conv1x1_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)
    )


class AtrousSpatialPyramidPooling(nn.Module):
    """ASPP: a 1x1 branch and one 3x3 branch per dilation rate, concatenated and projected."""

    def __init__(self, channels: int, out_channels: int, dilations: list):
        super().__init__()
        self.branches = nn.ModuleList([conv1x1_bn_relu(channels, out_channels)])
        for rate in dilations:
            self.branches.append(
                nn.Sequential(
                    nn.Conv2d(channels, out_channels, 3, padding=rate, dilation=rate, bias=False),
                    nn.BatchNorm2d(out_channels),
                    nn.ReLU(inplace=True),
                )
            )
        self.project = conv1x1_bn_relu(out_channels * len(self.branches), out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([branch(x) for branch in self.branches], dim=1))


class SpatialPyramidPooling(nn.Module):
    """SPP: average pooling to several grid sizes, 1x1 conv, bilinear upsampling back, fused."""

    def __init__(self, channels: int, out_channels: int, bins: list):
        super().__init__()
        self.bins = list(bins)
        self.reduce = nn.ModuleList([nn.Conv2d(channels, out_channels, 1) for _ in self.bins])
        self.project = conv1x1_bn_relu(out_channels * len(self.bins), out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        pooled = [
            F.interpolate(conv(F.adaptive_avg_pool2d(x, b)), size=size, mode="bilinear", align_corners=False)
            for b, conv in zip(self.bins, self.reduce)
        ]
        return self.project(torch.relu(torch.cat(pooled, dim=1)))


class ChannelAttention(nn.Module):
    """CBAM channel attention: a shared MLP on average- and max-pooled descriptors."""

    def __init__(self, channels: int, reduction: int):
        super().__init__()
        hidden = max(channels // reduction, 4)
        self.mlp = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.mlp(F.adaptive_avg_pool2d(x, 1)) + self.mlp(F.adaptive_max_pool2d(x, 1))
        return x * torch.sigmoid(weight)


class SpatialAttention(nn.Module):
    """CBAM spatial attention: a conv on the channel-wise mean and max maps."""

    def __init__(self, kernel_size: int):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        descriptor = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.conv(descriptor))


class HybridAttentionPoolingModule(nn.Module):
    """HAPM (section 3.2.2): ASPP, SPP, channel and spatial attention in parallel, fused by a
    1x1 conv and added to the input."""

    def __init__(self, config: HalsrConfig, channels: int):
        super().__init__()
        branch_channels = max(channels // config.hapm_branch_ratio, 4)
        self.aspp = AtrousSpatialPyramidPooling(channels, branch_channels, config.aspp_dilations)
        self.spp = SpatialPyramidPooling(channels, branch_channels, config.spp_bins)
        self.channel_attention = ChannelAttention(channels, config.attention_reduction)
        self.spatial_attention = SpatialAttention(config.spatial_attention_kernel)
        self.fuse = conv1x1_bn_relu(2 * branch_channels + 2 * channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = [self.aspp(x), self.spp(x), self.channel_attention(x), self.spatial_attention(x)]
        return x + self.fuse(torch.cat(branches, dim=1))


class AttentionGate(nn.Module):
    """Attention gate of eqs. (2)-(5): ``F_h`` is the (upsampled) decoder feature, ``F_l`` the
    encoder skip feature at the same resolution."""

    def __init__(self, decoder_channels: int, skip_channels: int):
        super().__init__()
        self.conv_h = nn.Conv2d(decoder_channels, skip_channels, 1)  # eq. (2), reused in eq. (5)
        self.conv_l = nn.Conv2d(skip_channels, skip_channels, 1)  # eq. (3)
        self.conv_psi = nn.Conv2d(skip_channels, 1, 1)  # eq. (4)

    def forward(self, f_h: torch.Tensor, f_l: torch.Tensor) -> torch.Tensor:
        f_big_h = self.conv_h(f_h)
        f_big_l = self.conv_l(f_l)
        f_sigma = torch.sigmoid(self.conv_psi(torch.relu(f_big_h + f_big_l)))
        return torch.cat([f_sigma * f_l, f_big_h], dim=1)  # eq. (5)


class DecoderBlock(nn.Module):
    """Upsample (transposed conv), gate/concatenate the skip, conv block, then HAPM."""

    def __init__(self, config: HalsrConfig, in_channels: int, skip_channels: int):
        super().__init__()
        self.upsample = nn.ConvTranspose2d(in_channels, skip_channels, 2, stride=2)
        self.gate = AttentionGate(skip_channels, skip_channels) if config.use_attention_gates else None
        self.conv = ConvBlock(2 * skip_channels, skip_channels)
        self.hapm = HybridAttentionPoolingModule(config, skip_channels) if config.use_hapm else None

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.upsample(x)
        if x.shape[-2:] != skip.shape[-2:]:
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        x = self.gate(x, skip) if self.gate is not None else torch.cat([skip, x], dim=1)
        x = self.conv(x)
        return self.hapm(x) if self.hapm is not None else x


class ReconstructionModule(nn.Module):
    """Latent-space reconstruction (section 3.2.3): attention map, squeeze-and-excite, 1x1 conv to
    class maps, bilinear upsampling to the output size."""

    def __init__(self, config: HalsrConfig, channels: int):
        super().__init__()
        self.attention = nn.Conv2d(channels, 1, 1)
        hidden = max(channels // config.attention_reduction, 4)
        self.squeeze_excite = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1),
            nn.Sigmoid(),
        )
        self.classifier = nn.Conv2d(channels, config.num_labels, 1)

    def forward(self, latent: torch.Tensor, size) -> torch.Tensor:
        attended = latent * torch.sigmoid(self.attention(latent))
        excited = attended * self.squeeze_excite(attended)
        # 1x1 conv before upsampling: identical result (both linear), far less memory.
        return F.interpolate(self.classifier(excited), size=size, mode="bilinear", align_corners=False)


@dataclass
class HalsrModelOutput(ModelOutput):
    """Output of :class:`HalsrModel`.

    Args:
        last_hidden_state: decoder output at the (padded) input resolution, ``(B, hidden_sizes[0], H, W)``.
        latent: bottleneck features after HAPM, ``(B, hidden_sizes[-1], H / 2**(L-1), W / 2**(L-1))``.
        hidden_states: encoder stage outputs, when ``output_hidden_states=True``.
    """

    last_hidden_state: torch.Tensor | None = None
    latent: torch.Tensor | None = None
    hidden_states: tuple | None = None


class HalsrPreTrainedModel(InferenceFoldingMixin, PreTrainedModel):
    config_class = HalsrConfig
    base_model_prefix = "halsr"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = False
    #: ``forward`` takes no loss kwargs: the Trainer must not pass ``num_items_in_batch`` (an unknown
    #: keyword argument is an error) and must scale the loss for gradient accumulation itself.
    accepts_loss_kwargs = False

    def _init_weights(self, module):
        init_conv_bn_weights(module)

    def _check_pixel_values(self, pixel_values: torch.Tensor) -> None:
        expected = f"(batch, {self.config.num_channels}, height, width)"
        if not isinstance(pixel_values, torch.Tensor):
            raise InputError(f"pixel_values must be a torch.Tensor of shape {expected}, got {type(pixel_values).__name__}")
        if pixel_values.ndim != 4:
            raise InputError(f"pixel_values must have shape {expected}, got {tuple(pixel_values.shape)} (rank {pixel_values.ndim})")
        if pixel_values.shape[1] != self.config.num_channels:
            raise InputError(
                f"pixel_values must have shape {expected}, got {tuple(pixel_values.shape)}: "
                f"{pixel_values.shape[1]} channels instead of {self.config.num_channels}"
            )
        minimum = 2 ** (len(self.config.hidden_sizes) - 1)
        if min(pixel_values.shape[-2:]) < minimum:
            raise InputError(
                f"pixel_values must have shape {expected} with height and width >= {minimum}, got {tuple(pixel_values.shape)}"
            )


class HalsrModel(HalsrPreTrainedModel):
    """The HALSR-Net encoder-decoder without the classification heads."""

    def __init__(self, config: HalsrConfig):
        super().__init__(config)
        sizes = config.hidden_sizes
        num_stages = len(sizes)
        self.encoder = nn.ModuleList()
        for i, width in enumerate(sizes):
            in_channels = config.num_channels if i == 0 else sizes[i - 1]
            dropout = config.dropout_rate if i >= num_stages - config.num_dropout_stages else 0.0
            self.encoder.append(ConvBlock(in_channels, width, dropout))
        self.bottleneck_hapm = HybridAttentionPoolingModule(config, sizes[-1]) if config.use_hapm else None
        self.decoder = nn.ModuleList(
            [DecoderBlock(config, sizes[i + 1], sizes[i]) for i in reversed(range(num_stages - 1))]
        )
        self.post_init()

    def forward(
        self, pixel_values: torch.Tensor, output_hidden_states: bool | None = None, return_dict: bool | None = None
    ):
        self._check_pixel_values(pixel_values)
        skips = []
        x = pixel_values
        for i, stage in enumerate(self.encoder):
            if i > 0:
                x = F.max_pool2d(x, 2)
            x = stage(x)
            skips.append(x)
        latent = self.bottleneck_hapm(x) if self.bottleneck_hapm is not None else x
        x = latent
        for block, skip in zip(self.decoder, reversed(skips[:-1])):
            x = block(x, skip)
        hidden_states = tuple(skips) if output_hidden_states else None
        if return_dict is False:
            return (x, latent) + ((hidden_states,) if hidden_states is not None else ())
        return HalsrModelOutput(last_hidden_state=x, latent=latent, hidden_states=hidden_states)


def bce_dice_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    alpha: float = 0.5,
    beta: float = 0.5,
    smooth: float = 1.0,
    ignore_index: int = 255,
) -> torch.Tensor:
    """``alpha * BCE + beta * Dice`` (eqs. 6-8) between softmax probabilities and one-hot labels.

    ``logits``: (B, K, H, W); ``labels``: (B, H, W) integer ids, ``ignore_index`` excluded. Computed
    in float32 whatever the autocast dtype.
    """
    num_labels = logits.shape[1]
    logits = logits.float()
    valid = labels != ignore_index
    safe_labels = torch.where(valid, labels, torch.zeros_like(labels)).long()
    if safe_labels.is_cuda:  # no host-device synchronisation inside the training step
        torch._assert_async(((safe_labels >= 0) & (safe_labels < num_labels)).all())
    elif safe_labels.numel() and (int(safe_labels.max()) >= num_labels or int(safe_labels.min()) < 0):
        raise InputError(
            f"labels must hold ids in [0, {num_labels - 1}] or {ignore_index} (ignored), got values in "
            f"[{int(labels.min())}, {int(labels.max())}]"
        )
    probs = torch.softmax(logits, dim=1)
    onehot = F.one_hot(safe_labels, num_labels).permute(0, 3, 1, 2).to(probs.dtype)
    mask = valid.unsqueeze(1).to(probs.dtype)
    num_valid = mask.sum().clamp_min(1.0)
    eps = 1e-7
    bce = -(onehot * torch.log(probs.clamp_min(eps)) + (1 - onehot) * torch.log((1 - probs).clamp_min(eps)))
    bce = (bce * mask).sum() / (num_valid * num_labels)
    dims = (0, 2, 3)
    intersection = (probs * onehot * mask).sum(dims)
    denominator = (probs * mask).sum(dims) + (onehot * mask).sum(dims)
    dice = 1 - ((2 * intersection + smooth) / (denominator + smooth)).mean()
    return alpha * bce + beta * dice


#: The image processor's geometry outputs: accepted by ``forward`` and ignored, so that
#: ``model(**processor(images))`` works (as SAM's model takes its processor's ``original_sizes``).
PROCESSOR_GEOMETRY = ("crop_boxes", "original_sizes")


def _check_segmentation_kwargs(kwargs: dict) -> None:
    """``forward`` takes no other keyword arguments than its own and :data:`PROCESSOR_GEOMETRY`: a
    typo (``label=``) is an :class:`InputError`, never silently ignored."""
    check_no_unknown_kwargs({k: v for k, v in kwargs.items() if k not in PROCESSOR_GEOMETRY},
                            "HalsrForSemanticSegmentation.forward",
                            ("pixel_values", "labels", "output_hidden_states", "return_dict", *PROCESSOR_GEOMETRY))


class HalsrForSemanticSegmentation(HalsrPreTrainedModel):
    """HALSR-Net with its segmentation head and latent-space reconstruction branch.

    ``forward(pixel_values, labels=None)`` returns a :class:`SemanticSegmenterOutput` whose
    ``logits`` have the input's spatial size ``(B, num_labels, H, W)``; with ``labels`` (B, H, W) it
    also returns the BCE + Dice loss. ``crop_boxes`` and ``original_sizes``, which the image
    processor returns for its post-processing, are accepted and ignored:
    ``model(**processor(images, segmentation_maps=maps))`` works.
    """

    def __init__(self, config: HalsrConfig):
        super().__init__(config)
        self.halsr = HalsrModel(config)
        self.head = nn.Conv2d(config.hidden_sizes[0], config.num_labels, 1)
        self.reconstruction = (
            ReconstructionModule(config, config.hidden_sizes[-1]) if config.use_reconstruction else None
        )
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ):
        if kwargs:
            _check_segmentation_kwargs(kwargs)
        self._check_pixel_values(pixel_values)
        height, width = pixel_values.shape[-2:]
        multiple = 2 ** (len(self.config.hidden_sizes) - 1)
        pad_h, pad_w = (-height) % multiple, (-width) % multiple
        if pad_h or pad_w:
            pixel_values = F.pad(pixel_values, (0, pad_w, 0, pad_h))
        outputs = self.halsr(pixel_values, output_hidden_states=output_hidden_states, return_dict=True)
        logits = self.head(outputs.last_hidden_state)
        if self.reconstruction is not None:
            logits = logits + self.reconstruction(outputs.latent, logits.shape[-2:])
        logits = logits[..., :height, :width]

        loss = None
        if labels is not None:
            if labels.shape != (logits.shape[0], height, width):
                raise InputError(
                    f"labels must have shape (batch, height, width) = {(logits.shape[0], height, width)}, "
                    f"got {tuple(labels.shape)}"
                )
            loss = bce_dice_loss(
                logits,
                labels,
                alpha=self.config.loss_alpha,
                beta=self.config.loss_beta,
                smooth=self.config.dice_smooth,
                ignore_index=self.config.semantic_loss_ignore_index,
            )
        if return_dict is False:
            output = (logits,)
            return ((loss,) + output) if loss is not None else output
        return SemanticSegmenterOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states)
