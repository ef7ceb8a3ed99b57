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
            the LV at all (an extension of the paper: the pipeline uses it to say "no LV found"
            instead of segmenting noise). Trained with BCE beside the box MSE.
        presence_loss_weight (`float`, defaults to 0.1): weight of that BCE term.
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
        if image_size % (2 ** len(self.encoder_sizes)):
            raise ValueError(
                f"image_size {image_size} must be divisible by 2 ** len(encoder_sizes) = {2 ** len(self.encoder_sizes)}"
            )
