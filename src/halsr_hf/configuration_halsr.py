"""HALSR-Net configuration.

HALSR-Net (Hybrid Attention and Latent-Space Reconstruction Network) is the second stage of the
two-stage method of the paper: it segments the LV cavity and the myocardium inside the ROI that
the regressor (:mod:`configuration_roi`) found. See ``modeling_halsr.py`` for the architecture
and the choices made where the paper is vague.
"""

import sys

from transformers import PretrainedConfig

DEFAULT_ID2LABEL = {0: "background", 1: "lv_cavity", 2: "myocardium"}

#: Values of :attr:`HalsrConfig.stage`.
STAGES = ("segmentation", "localization")

#: The pipeline task whose saved ``custom_pipelines`` give way to the installed package's class
#: (:attr:`HalsrConfig.custom_pipelines`).
REGISTERED_TASK = "cardiac-lv-segmentation"

#: Named presets. The paper lists 64-128-256-512-1024 filters (``large``) yet reports 10.7M
#: parameters (Table 9), which only a half-width network reaches (``base``). ``small`` is a
#: CPU-friendly width. Parameter counts (measured by ``halsr-hf info --presets``) are in the README.
PRESETS = {
    "tiny": {"hidden_sizes": [4, 8, 8, 16, 16], "dropout_rate": 0.0},
    "small": {"hidden_sizes": [16, 32, 64, 128, 192]},
    "base": {"hidden_sizes": [32, 64, 128, 256, 448]},
    "large": {"hidden_sizes": [64, 128, 256, 512, 1024]},
}

#: The U-Net baseline of the paper's comparisons is HALSR-Net with its three modules and its
#: dropout off: the same encoder/decoder (two 3x3 conv + BatchNorm + ReLU per stage, 2x2
#: max-pooling, transposed-conv upsampling, skip concatenation), the same 1x1 head and the same
#: loss. These flags work with any preset or width (``HalsrConfig.plain_unet``).
PLAIN_UNET = {"use_hapm": False, "use_attention_gates": False, "use_reconstruction": False, "dropout_rate": 0.0}


class HalsrConfig(PretrainedConfig):
    r"""Configuration of :class:`HalsrForSemanticSegmentation`.

    Args:
        num_channels (`int`, defaults to 1): input channels (grayscale cine MRI).
        hidden_sizes (`list[int]`, defaults to ``[16, 32, 64, 128, 192]``, the ``small`` preset):
            filters of the 5 encoder stages; the last one is the bottleneck (latent space). The
            decoder mirrors the first four. Inputs are padded internally to a multiple of
            ``2 ** (len(hidden_sizes) - 1)``.
        dropout_rate (`float`, defaults to 0.3): spatial dropout after the conv block of the
            ``num_dropout_stages`` deepest encoder stages (the paper uses 0.30-0.50).
        num_dropout_stages (`int`, defaults to 2): how many of the deepest encoder stages get dropout.
        use_hapm (`bool`, defaults to True): Hybrid Attention Pooling Module at the bottleneck and in
            every decoder block. Off = the ablation "without HAPM".
        use_attention_gates (`bool`, defaults to True): attention gates (eqs. 2-5) on the skips.
            Off = plain concatenation.
        use_reconstruction (`bool`, defaults to True): latent-space reconstruction branch whose map is
            added to the decoder's output. Off = the ablation "without reconstruction".
        aspp_dilations (`list[int]`, defaults to ``[1, 2, 4]``): dilation rates of the 3x3 ASPP
            branches (plus a 1x1 branch). Small rates because HAPM runs on small feature maps.
        spp_bins (`list[int]`, defaults to ``[1, 2, 4]``): output grid sizes of the SPP poolings.
        hapm_branch_ratio (`int`, defaults to 4): ASPP and SPP produce ``channels // ratio`` maps each.
        attention_reduction (`int`, defaults to 8): reduction of the channel-attention MLP and of the
            squeeze-and-excite block.
        spatial_attention_kernel (`int`, defaults to 7): kernel of the spatial-attention conv.
        loss_alpha (`float`, defaults to 0.5): weight of BCE in the loss (eq. 8).
        loss_beta (`float`, defaults to 0.5): weight of Dice in the loss (eq. 8).
        dice_smooth (`float`, defaults to 1.0): the epsilon of eq. 7.
        semantic_loss_ignore_index (`int`, defaults to 255): label value excluded from the loss
            (e.g. myocardium not annotated on a slice).
        image_size (`int`, defaults to 128): the crop size the model was trained at; used by the image
            processor, not a constraint of the network (any size works).
        stage (`str`, defaults to ``"segmentation"``): which stage of the two-stage method this
            network is. ``"segmentation"``: HALSR-Net on LV crops (the model a pipeline is loaded
            with); ``"localization"``: the coarse LV localiser of the ROI stage (labels background,
            lv, on whole slices; ``halsr-hf train --task localization`` writes it). The pipeline
            accepts a HALSR-Net as its ROI model only with ``stage="localization"``.
        roi_subfolder (`str`, defaults to ``"roi"``): the sub-folder of the model's folder or Hub
            repository that holds its ROI model.
        id2label / label2id: defaults to background, lv_cavity, myocardium. Pass both (transformers 5
            does not derive one from the other).
    """

    model_type = "halsr"

    def __init__(
        self,
        num_channels: int = 1,
        hidden_sizes: list | None = None,
        dropout_rate: float = 0.3,
        num_dropout_stages: int = 2,
        use_hapm: bool = True,
        use_attention_gates: bool = True,
        use_reconstruction: bool = True,
        aspp_dilations: list | None = None,
        spp_bins: list | None = None,
        hapm_branch_ratio: int = 4,
        attention_reduction: int = 8,
        spatial_attention_kernel: int = 7,
        loss_alpha: float = 0.5,
        loss_beta: float = 0.5,
        dice_smooth: float = 1.0,
        semantic_loss_ignore_index: int = 255,
        image_size: int = 128,
        stage: str = "segmentation",
        roi_subfolder: str = "roi",
        **kwargs,
    ):
        if "id2label" not in kwargs and "num_labels" not in kwargs:
            kwargs["id2label"] = dict(DEFAULT_ID2LABEL)
        if "id2label" in kwargs and "label2id" not in kwargs:
            kwargs["label2id"] = {v: int(k) for k, v in kwargs["id2label"].items()}
        super().__init__(**kwargs)
        self.num_channels = num_channels
        self.hidden_sizes = list(hidden_sizes) if hidden_sizes is not None else list(PRESETS["small"]["hidden_sizes"])
        if len(self.hidden_sizes) < 2:
            raise ValueError(f"hidden_sizes needs at least 2 stages, got {self.hidden_sizes}")
        self.dropout_rate = dropout_rate
        self.num_dropout_stages = num_dropout_stages
        self.use_hapm = use_hapm
        self.use_attention_gates = use_attention_gates
        self.use_reconstruction = use_reconstruction
        self.aspp_dilations = list(aspp_dilations) if aspp_dilations is not None else [1, 2, 4]
        self.spp_bins = list(spp_bins) if spp_bins is not None else [1, 2, 4]
        self.hapm_branch_ratio = hapm_branch_ratio
        self.attention_reduction = attention_reduction
        self.spatial_attention_kernel = spatial_attention_kernel
        self.loss_alpha = loss_alpha
        self.loss_beta = loss_beta
        self.dice_smooth = dice_smooth
        self.semantic_loss_ignore_index = semantic_loss_ignore_index
        self.image_size = image_size
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
        self.stage = stage
        self.roi_subfolder = roi_subfolder

    @property
    def custom_pipelines(self) -> dict:
        """The ``custom_pipelines`` of a saved folder's ``config.json`` (the pipeline code copied beside
        the weights, for ``trust_remote_code=True`` where this package is not installed), or ``{}``
        while the task is registered in this process by the installed package.

        ``transformers.pipeline`` reads only ``config.custom_pipelines``; when it names the task, it
        refuses the registered task unless ``trust_remote_code`` or ``pipeline_class`` is given, and
        with ``trust_remote_code=True`` it runs the copied code. With ``halsr_hf`` imported (which
        registers :data:`REGISTERED_TASK` with its pipeline class), the installed package's classes
        are used, without a prompt; without it, the copied code. The stored value stays in the
        config's ``__dict__``, so ``to_dict`` and ``save_pretrained`` keep writing it."""
        stored = self.__dict__.get("custom_pipelines") or {}
        registry = getattr(sys.modules.get("transformers.pipelines"), "PIPELINE_REGISTRY", None)
        registered = registry.supported_tasks.get(REGISTERED_TASK) if registry is not None else None
        if registered is not None and getattr(registered.get("impl"), "__module__", "").startswith("halsr_hf."):
            return {}
        return stored

    @custom_pipelines.setter
    def custom_pipelines(self, value):
        self.__dict__["custom_pipelines"] = value

    @classmethod
    def from_preset(cls, name: str, **kwargs) -> "HalsrConfig":
        """Build a config from a named preset (``tiny``, ``small``, ``base``, ``large``);
        keyword arguments override the preset's values."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
        values = dict(PRESETS[name])
        values.update(kwargs)
        return cls(**values)

    @classmethod
    def plain_unet(cls, preset: str = "small", **kwargs) -> "HalsrConfig":
        """The plain U-Net baseline at the widths of ``preset``: :data:`PLAIN_UNET` (no HAPM, no
        attention gates, no reconstruction branch, no dropout); keyword arguments override (e.g.
        ``hidden_sizes``). Trained (``halsr-hf train --architecture unet``), saved and loaded as
        :class:`HalsrForSemanticSegmentation` like any HALSR-Net."""
        return cls.from_preset(preset, **{**PLAIN_UNET, **kwargs})
