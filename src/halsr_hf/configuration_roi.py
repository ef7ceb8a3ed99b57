"""Configuration of the LV ROI regressor (paper section 3.1)."""

from transformers import PretrainedConfig


class LvRoiConfig(PretrainedConfig):
    r"""Configuration of :class:`LvRoiRegressor`.

    Args:
        num_channels (`int`, defaults to 1): input channels.
        image_size (`int`, defaults to 128): the square input size. The regressor's "Conv AxA" has a
            kernel equal to its input's spatial size, ``image_size / 2 ** len(encoder_sizes)``, so the
            size is fixed by the config; the image processor resizes slices to it.
        encoder_sizes (`list[int]`, defaults to ``[32, 64, 128, 256]``): filters of the 4 encoder blocks
            (two 3x3 conv + BatchNorm + ReLU, then 2x2 max-pooling).
        fc_sizes (`list[int]`, defaults to ``[384, 512]``): the "fully connected" refinement up to 512,
            applied at every position (1x1 convs), so the spatial layout reaches the AxA conv.
        reduce_sizes (`list[int]`, defaults to ``[256, 128, 64]``): the three 1x1 convs that reduce the
            filter dimension before the AxA conv.
        global_channels (`int`, defaults to 128): maps produced by the AxA conv.
        head_sizes (`list[int]`, defaults to ``[64, 32]``): the three final 1x1 convs are
            ``global_channels -> head_sizes[0] -> head_sizes[1] -> 4``.
        dropout_rate (`float`, defaults to 0.3): dropout before the final 1x1 convs.
        predict_presence (`bool`, defaults to True): an extra output, the logit that the slice shows
            the LV at all (an extension of the paper: the pipeline uses it to say "LV not located"
            instead of segmenting noise). Trained with BCE beside the box MSE.
        presence_loss_weight (`float`, defaults to 0.1): weight of that BCE term.
        box_parametrization (`str`, defaults to ``"center_size"``): what the 4 sigmoid outputs mean.
            ``"center_size"``: centre x, centre y, width, height (a box can never be inverted; our
            default); ``"corners"``: x_min, y_min, x_max, y_max directly (the paper's reading, which
            can return x_max < x_min).
        initial_box (`list[float]`, defaults to ``[0.5, 0.5, 0.3, 0.3]``): the box (centre x, centre
            y, width, height, normalised) the regressor outputs at initialisation: the box layer
            starts with near-zero weights and this box's logits as bias, so no output starts in the
            sigmoid's flat tails (Kaiming init put 42 % of them there and training stalled).
        giou_loss_weight (`float`, defaults to 1.0): weight of a ``1 - GIoU`` term added to the
            paper's MSE (eq. 1), which alone gives small gradients once boxes are roughly placed.
    """

    model_type = "halsr_roi"

    def __init__(
        self,
        num_channels: int = 1,
        image_size: int = 128,
        encoder_sizes: list | None = None,
        fc_sizes: list | None = None,
        reduce_sizes: list | None = None,
        global_channels: int = 128,
        head_sizes: list | None = None,
        dropout_rate: float = 0.3,
        predict_presence: bool = True,
        presence_loss_weight: float = 0.1,
        box_parametrization: str = "center_size",
        initial_box: list | None = None,
        giou_loss_weight: float = 1.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_channels = num_channels
        self.image_size = image_size
        self.encoder_sizes = list(encoder_sizes) if encoder_sizes is not None else [32, 64, 128, 256]
        self.fc_sizes = list(fc_sizes) if fc_sizes is not None else [384, 512]
        self.reduce_sizes = list(reduce_sizes) if reduce_sizes is not None else [256, 128, 64]
        self.global_channels = global_channels
        self.head_sizes = list(head_sizes) if head_sizes is not None else [64, 32]
        self.dropout_rate = dropout_rate
        self.predict_presence = predict_presence
        self.presence_loss_weight = presence_loss_weight
        if box_parametrization not in ("center_size", "corners"):
            raise ValueError(f"box_parametrization must be 'center_size' or 'corners', got {box_parametrization!r}")
        self.box_parametrization = box_parametrization
        self.initial_box = list(initial_box) if initial_box is not None else [0.5, 0.5, 0.3, 0.3]
        self.giou_loss_weight = giou_loss_weight
        if image_size % (2 ** len(self.encoder_sizes)):
            raise ValueError(
                f"image_size {image_size} must be divisible by 2 ** len(encoder_sizes) = {2 ** len(self.encoder_sizes)}"
            )
