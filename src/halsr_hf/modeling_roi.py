"""The LV ROI regressor (paper section 3.1): a CNN that predicts the LV bounding box.

Architecture, as in Fig. 2 of the paper::

    4 encoder blocks (32, 64, 128, 256 filters; 2x conv3x3-BN-ReLU + maxpool)
    -> "fully connected" refinement up to 512 (1x1 convs, i.e. a dense layer at every position)
    -> three 1x1 convs reducing the filters (256, 128, 64)
    -> Conv AxA, A = the spatial size of its input (image_size / 16), producing 128 maps of 1x1
    -> three 1x1 convs (64, 32, 4) -> sigmoid -> (x_min, y_min, x_max, y_max) in [0, 1]

Choices: the fully connected layers act per position (the paper keeps a spatial map after them,
since a conv with a kernel the size of its input follows); the coordinates are squashed by a
sigmoid so they stay inside the image; the optional presence logit (``predict_presence``) is a
fourth 1x1 conv beside the box output.

Fixes of the paper's recipe, which did not train here (ACDC validation IoU 0.29 after a GPU run,
below always predicting the mean box): the 4 outputs are centre and size by default
(``box_parametrization``), so boxes cannot be inverted; the box and presence layers start near
zero with ``initial_box`` as bias instead of Kaiming fan-out (which saturated the sigmoids); the
loss adds ``giou_loss_weight`` x (1 - GIoU) to the MSE. The bundled model's ROI stage is a coarse
localiser instead (see :mod:`halsr_hf.roi_stage`); this regressor stays selectable.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.utils import ModelOutput

from .configuration_roi import LvRoiConfig
from .errors import InputError, check_no_unknown_kwargs
from .weight_init import InferenceFoldingMixin, init_conv_bn_weights


@dataclass
class LvRoiOutput(ModelOutput):
    """Output of :class:`LvRoiRegressor`.

    Args:
        loss: MSE over the 4 normalised coordinates (eq. 1) of slices that show the LV, plus
            ``giou_loss_weight`` x (1 - GIoU) over the same slices, plus
            ``presence_loss_weight`` x BCE of the presence logit, when labels are given.
        pred_boxes: ``(B, 4)`` boxes ``(x_min, y_min, x_max, y_max)`` normalised to [0, 1] of the input.
        presence_logits: ``(B,)`` logit that the LV is visible (when ``predict_presence``).
    """

    loss: torch.Tensor | None = None
    pred_boxes: torch.Tensor | None = None
    presence_logits: torch.Tensor | None = None


def _conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int, padding: int = 0) -> list:
    return [
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]


def generalized_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """GIoU of boxes ``(x_min, y_min, x_max, y_max)``, (B, 4) each (Rezatofighi et al., 2019)."""
    area_a = (a[:, 2] - a[:, 0]).clamp_min(0) * (a[:, 3] - a[:, 1]).clamp_min(0)
    area_b = (b[:, 2] - b[:, 0]).clamp_min(0) * (b[:, 3] - b[:, 1]).clamp_min(0)
    inter_w = (torch.minimum(a[:, 2], b[:, 2]) - torch.maximum(a[:, 0], b[:, 0])).clamp_min(0)
    inter_h = (torch.minimum(a[:, 3], b[:, 3]) - torch.maximum(a[:, 1], b[:, 1])).clamp_min(0)
    inter = inter_w * inter_h
    union = (area_a + area_b - inter).clamp_min(1e-7)
    hull = ((torch.maximum(a[:, 2], b[:, 2]) - torch.minimum(a[:, 0], b[:, 0]))
            * (torch.maximum(a[:, 3], b[:, 3]) - torch.minimum(a[:, 1], b[:, 1]))).clamp_min(1e-7)
    return inter / union - (hull - union) / hull


class LvRoiPreTrainedModel(InferenceFoldingMixin, PreTrainedModel):
    config_class = LvRoiConfig
    base_model_prefix = "roi"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    #: ``forward`` takes no loss kwargs (the Trainer must not pass ``num_items_in_batch``).
    accepts_loss_kwargs = False

    def _init_weights(self, module):
        init_conv_bn_weights(module)


class LvRoiRegressor(LvRoiPreTrainedModel):
    """Predicts the LV box of a whole short-axis slice, resized to ``config.image_size`` square.

    ``forward(pixel_values, labels=None, has_lv=None)``: ``labels`` are ``(B, 4)`` target boxes
    normalised to [0, 1]; ``has_lv`` ``(B,)`` marks slices that show the LV (default: all do);
    box errors of slices without LV are not counted.
    """

    def __init__(self, config: LvRoiConfig):
        super().__init__(config)
        layers = []
        in_channels = config.num_channels
        for width in config.encoder_sizes:
            layers += _conv_bn_relu(in_channels, width, 3, 1) + _conv_bn_relu(width, width, 3, 1)
            layers.append(nn.MaxPool2d(2))
            in_channels = width
        self.encoder = nn.Sequential(*layers)
        layers = []
        for width in list(config.fc_sizes) + list(config.reduce_sizes):
            layers += _conv_bn_relu(in_channels, width, 1)
            in_channels = width
        self.refine = nn.Sequential(*layers)
        kernel = config.image_size // 2 ** len(config.encoder_sizes)
        self.global_conv = nn.Sequential(*_conv_bn_relu(in_channels, config.global_channels, kernel))
        self.dropout = nn.Dropout(config.dropout_rate)
        head = []
        in_channels = config.global_channels
        for width in config.head_sizes:
            head += [nn.Conv2d(in_channels, width, 1), nn.ReLU(inplace=True)]
            in_channels = width
        self.head = nn.Sequential(*head)
        self.box = nn.Conv2d(in_channels, 4, 1)
        self.presence = nn.Conv2d(in_channels, 1, 1) if config.predict_presence else None
        self.post_init()
        self._init_output_layers()

    @torch.no_grad()
    def _init_output_layers(self):
        """Box layer: tiny weights, the logits of ``initial_box`` as bias; presence: tiny weights, 0 bias."""
        initial = torch.tensor(self.config.initial_box, dtype=torch.float32).clamp(1e-3, 1 - 1e-3)
        if self.config.box_parametrization == "corners":
            cx, cy, w, h = initial.tolist()
            initial = torch.tensor([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]).clamp(1e-3, 1 - 1e-3)
        nn.init.normal_(self.box.weight, std=1e-3)
        self.box.bias.copy_(torch.logit(initial))
        if self.presence is not None:
            nn.init.normal_(self.presence.weight, std=1e-3)
            nn.init.zeros_(self.presence.bias)

    def decode(self, raw: torch.Tensor) -> torch.Tensor:
        """(B, 4) sigmoid outputs -> boxes (x_min, y_min, x_max, y_max) in [0, 1]."""
        if self.config.box_parametrization == "corners":
            return raw
        centre, size = raw[:, :2], raw[:, 2:]
        return torch.cat([centre - size / 2, centre + size / 2], dim=1).clamp(0.0, 1.0)

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        has_lv: torch.Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ):
        check_no_unknown_kwargs(kwargs, "LvRoiRegressor.forward", ("pixel_values", "labels", "has_lv", "return_dict"))
        size = self.config.image_size
        expected = (self.config.num_channels, size, size)
        if not isinstance(pixel_values, torch.Tensor) or pixel_values.ndim != 4 or tuple(pixel_values.shape[1:]) != expected:
            got = tuple(pixel_values.shape) if isinstance(pixel_values, torch.Tensor) else type(pixel_values).__name__
            raise InputError(
                f"the ROI regressor takes pixel_values of shape (batch, {expected[0]}, {size}, {size}) "
                f"(its AxA conv fixes the size; the image processor resizes whole slices to it), got {got}"
            )
        features = self.head(self.dropout(self.global_conv(self.refine(self.encoder(pixel_values)))))
        pred_boxes = self.decode(torch.sigmoid(self.box(features).flatten(1)))
        presence_logits = self.presence(features).flatten() if self.presence is not None else None

        loss = None
        if labels is not None:
            if labels.shape != pred_boxes.shape:
                raise InputError(f"labels must have shape {tuple(pred_boxes.shape)} (normalised boxes), got {tuple(labels.shape)}")
            present = torch.ones_like(pred_boxes[:, 0]) if has_lv is None else has_lv.to(pred_boxes.dtype)
            squared = ((pred_boxes.float() - labels.float()) ** 2).mean(dim=1)  # eq. (1) per sample
            per_sample = squared
            if self.config.giou_loss_weight:
                per_sample = per_sample + self.config.giou_loss_weight * (1 - generalized_iou(pred_boxes.float(), labels.float()))
            loss = (per_sample * present).sum() / present.sum().clamp_min(1.0)
            if presence_logits is not None and has_lv is not None:
                loss = loss + self.config.presence_loss_weight * F.binary_cross_entropy_with_logits(
                    presence_logits.float(), present.float()
                )
        if return_dict is False:
            output = (pred_boxes, presence_logits)
            return ((loss,) + output) if loss is not None else output
        return LvRoiOutput(loss=loss, pred_boxes=pred_boxes, presence_logits=presence_logits)
