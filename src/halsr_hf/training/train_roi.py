"""Train or fine-tune the LV ROI regressor with ``transformers.Trainer``.

``halsr-hf train-roi`` / ``python scripts/train_roi.py`` (also under ``torchrun`` / ``accelerate
launch``), with the arguments of ``halsr-hf train`` (data, augmentation, Trainer) and these model
arguments. The regressor trains on whole slices prepared as at inference
(``HalsrImageProcessor.preprocess_roi``: normalised slice zero-padded to a square, resized to
``roi_size``), the target being the LV box of the (augmented) label normalised to the padded
square; slices without LV train the presence output only. Validation metrics: ``iou_mean`` (mean
IoU of predicted and true boxes, the model-selection metric), ``corner_rmse_px`` (RMSE of the 4
coordinates in pixels of the ``roi_size`` input) and ``presence_accuracy``.
"""

import sys
import numpy as np
import torch
from transformers import set_seed

from ..configuration_roi import LvRoiConfig
from ..image_processing_halsr import HalsrImageProcessor
from ..modeling_roi import LvRoiRegressor
from .data import RoiDataset
from .arguments import ROI_DEFAULTS, RoiModelArguments  # noqa: F401
from .train import augment_config, epoch_options, limit, load_source, parse, train_and_save

class BoxMetric:
    """Mean box IoU and corner RMSE over the validation slices that show the LV, accumulated batch
    by batch; presence accuracy over all slices (when the model predicts presence)."""

    def __init__(self, roi_size: int):
        self.roi_size = roi_size
        self.reset()

    def reset(self):
        self.iou_sum, self.sq_sum, self.count, self.correct, self.total = 0.0, 0.0, 0, 0, 0

    def __call__(self, eval_pred, compute_result: bool = True):
        predictions = eval_pred.predictions
        boxes, presence = (predictions[0], predictions[1]) if isinstance(predictions, (tuple, list)) else (predictions, None)
        labels, has_lv = eval_pred.label_ids
        boxes = torch.as_tensor(boxes).float()
        labels = torch.as_tensor(labels).float().to(boxes.device)
        has_lv = torch.as_tensor(has_lv).to(boxes.device).bool()
        if presence is not None:
            presence = torch.as_tensor(presence).to(boxes.device)
            self.correct += int(((presence > 0) == has_lv).sum())
            self.total += int(has_lv.numel())
        p, t = boxes[has_lv], labels[has_lv]
        if len(p):
            lo, hi = torch.maximum(p[:, :2], t[:, :2]), torch.minimum(p[:, 2:], t[:, 2:])
            inter = (hi - lo).clamp_min(0).prod(dim=1)
            area = lambda b: (b[:, 2:] - b[:, :2]).clamp_min(0).prod(dim=1)  # noqa: E731
            iou = inter / (area(p) + area(t) - inter).clamp_min(1e-12)
            self.iou_sum += float(iou.sum())
            self.sq_sum += float((((p - t) * self.roi_size) ** 2).mean(dim=1).sum())
            self.count += len(p)
        if not compute_result:
            return {}
        result = {
            "iou_mean": self.iou_sum / self.count if self.count else 0.0,
            "corner_rmse_px": float(np.sqrt(self.sq_sum / self.count)) if self.count else float("nan"),
        }
        if self.total:
            result["presence_accuracy"] = self.correct / self.total
        self.reset()
        return result


def build_model(model_args: RoiModelArguments):
    extra = {} if model_args.dropout_rate is None else {"dropout_rate": model_args.dropout_rate}
    if model_args.model_name_or_path:
        model = LvRoiRegressor.from_pretrained(
            model_args.model_name_or_path, ignore_mismatched_sizes=model_args.ignore_mismatched_sizes,
            trust_remote_code=model_args.trust_remote_code, **extra,
        )
    elif model_args.config_name:
        model = LvRoiRegressor(LvRoiConfig.from_pretrained(model_args.config_name, **extra))
    else:
        model = LvRoiRegressor(LvRoiConfig(image_size=model_args.roi_size, **extra))
    model.accepts_loss_kwargs = False
    return model


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    prog = "halsr-hf train-roi"
    model_args, data_args, training_args = parse(argv, RoiModelArguments, ROI_DEFAULTS, "iou_mean", prog)

    set_seed(training_args.seed)  # before the model is built
    model = build_model(model_args)
    roi_size = model.config.image_size
    train_dataset = RoiDataset(load_source(data_args, data_args.train_split, "roi"), roi_size=roi_size, train=data_args.augment,
                               augment=augment_config(data_args), **epoch_options(data_args, training_args.seed))
    eval_dataset = None
    if training_args.eval_strategy != "no":
        eval_dataset = limit(RoiDataset(load_source(data_args, data_args.eval_split, "roi"), roi_size=roi_size, train=False), data_args.max_eval_samples)
    return train_and_save(
        argv, prog, (model_args, data_args, training_args), model, train_dataset, eval_dataset,
        HalsrImageProcessor(roi_size=roi_size, size=data_args.image_size, crop_margin=data_args.eval_margin),
        BoxMetric(roi_size), "lv_roi_regressor",
    )


if __name__ == "__main__":
    sys.exit(main())
