"""``halsr-hf info``: versions, presets and their parameter counts."""

import argparse
import platform


def preset_parameter_counts() -> dict:
    """Parameter count of each HALSR-Net preset and of the default ROI regressor."""
    from ..configuration_halsr import PRESETS, HalsrConfig
    from ..configuration_roi import LvRoiConfig
    from ..modeling_halsr import HalsrForSemanticSegmentation
    from ..modeling_roi import LvRoiRegressor

    counts = {}
    for name in PRESETS:
        config = HalsrConfig.from_preset(name)
        model = HalsrForSemanticSegmentation(config)
        counts[name] = {"hidden_sizes": config.hidden_sizes, "parameters": sum(p.numel() for p in model.parameters())}
    counts["roi"] = {"parameters": sum(p.numel() for p in LvRoiRegressor(LvRoiConfig()).parameters())}
    return counts


def main(argv=None) -> int:
    from ..cli import VERBOSE_HELP, description

    parser = argparse.ArgumentParser(prog="halsr-hf info", description=description(__doc__), epilog=VERBOSE_HELP)
    parser.add_argument("--presets", action="store_true", help="also build each preset and count its parameters")
    args = parser.parse_args(argv)
    import torch
    import transformers

    from .. import __version__

    print(f"halsr-hf {__version__}, torch {torch.__version__}, transformers {transformers.__version__}, "
          f"python {platform.python_version()}")
    if args.presets:
        print("| preset | hidden_sizes | parameters |\n|---|---|---|")
        for name, info in preset_parameter_counts().items():
            print(f"| {name} | {info.get('hidden_sizes', 'ROI regressor')} | {info['parameters']:,} ({info['parameters'] / 1e6:.2f}M) |")
    return 0
