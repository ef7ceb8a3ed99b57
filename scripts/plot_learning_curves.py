#!/usr/bin/env python
"""Learning curves of a ``halsr-hf train`` run: training loss and validation Dice per class and per
validation source, from the run's ``trainer_state.json`` (the run folder's, else its newest
``checkpoint-N``'s), drawn into one PNG.

    python scripts/plot_learning_curves.py runs/mix_small --out runs/mix_small/learning_curves.png

With several validation sources the metrics are ``eval_<source>_dice_<class>`` (one line per source
and class) and ``eval_dice_mean`` (the mean that chose the best checkpoint, drawn in black, its best
epoch marked).

A run that continues an earlier one (a second stage started from a checkpoint of the first, e.g.
``scripts/anneal_default_segmenter.sh``) is drawn after it with ``--after`` (the earlier run folder
or the checkpoint it started from): one time axis in epochs, a vertical line where the second stage
starts.

    python scripts/plot_learning_curves.py runs/mix_small_anneal --after runs/mix_small/checkpoint-3683
"""

import argparse
import json
import re
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from halsr_hf.atomic import atomic_file  # noqa: E402


def trainer_state(run_dir: Path) -> dict:
    """The trainer state of a run folder, or of its newest checkpoint while it is still training."""
    path = run_dir / "trainer_state.json"
    if not path.is_file():
        checkpoints = sorted(run_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
        if not checkpoints:
            raise SystemExit(f"{run_dir}: no trainer_state.json and no checkpoint-N folder")
        path = checkpoints[-1] / "trainer_state.json"
    return json.loads(path.read_text())


def curves(state: dict) -> tuple:
    """(loss points [(epoch, loss)], {metric name: [(epoch, value)]}) from ``log_history``."""
    loss, metrics = [], {}
    for entry in state["log_history"]:
        if "loss" in entry:
            loss.append((entry["epoch"], entry["loss"]))
        for key, value in entry.items():
            if re.fullmatch(r"eval_(.+_)?dice_[a-z_]+", key) and isinstance(value, (int, float)):
                metrics.setdefault(key, []).append((entry["epoch"], value))
    return loss, metrics


def stage_curves(run_dir: Path, after: Path | None = None) -> tuple:
    """(loss, metrics, offset): :func:`curves` of a run, after those of the earlier stage it
    continued (``after``), its epochs shifted by that stage's last epoch (``offset``)."""
    loss, metrics = curves(trainer_state(run_dir))
    if after is None:
        return loss, metrics, 0.0
    earlier = trainer_state(after)
    offset = float(earlier.get("epoch") or 0.0)
    early_loss, early_metrics = curves(earlier)
    loss = early_loss + [(epoch + offset, value) for epoch, value in loss]
    metrics = {key: early_metrics.get(key, []) + [(epoch + offset, value) for epoch, value in metrics.get(key, [])]
               for key in sorted(set(early_metrics) | set(metrics))}
    return loss, metrics, offset


def draw(run_dir: Path, out: Path, after: Path | None = None) -> Path:
    state = trainer_state(run_dir)
    loss, metrics, offset = stage_curves(run_dir, after)
    title = run_dir.name if after is None else f"{after} then {run_dir.name}"
    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8))
    if loss:
        left.plot(*zip(*loss), lw=0.8)
    if after is not None:
        for axis in (left, right):
            axis.axvline(offset, color="grey", ls="--", lw=1)
        left.annotate(f"{run_dir.name} starts", (offset, 1), xycoords=("data", "axes fraction"), xytext=(3, -12),
                      textcoords="offset points", fontsize=8, color="grey")
    left.set(xlabel="epoch", ylabel="training loss (BCE + Dice)", title=f"{title}: training loss")
    left.grid(alpha=0.3)
    for key in sorted(metrics):
        points = metrics[key]
        if key == "eval_dice_mean":
            right.plot(*zip(*points), color="black", lw=2, label="selection: mean dice (eval_dice_mean)")
            best = max(points, key=lambda p: p[1])
            right.scatter([best[0]], [best[1]], color="black", zorder=5)
            right.annotate(f"best {best[1]:.3f} (epoch {best[0]:.0f})", best, textcoords="offset points", xytext=(-60, -14))
        elif not key.endswith("dice_mean"):
            right.plot(*zip(*points), lw=1, label=key.removeprefix("eval_"))
    right.set(xlabel="epoch", ylabel="validation Dice (2D, crops with the reference box)",
              title="validation Dice per source and class")
    right.grid(alpha=0.3)
    right.legend(fontsize=7, loc="lower right")
    steps = state.get("global_step")
    if after is not None:
        steps = f"{trainer_state(after).get('global_step')} + {steps}"
    figure.suptitle(f"{title}: {steps} steps, epoch {offset + state.get('epoch', 0):.1f}", fontsize=10)
    figure.tight_layout()
    atomic_file(out, lambda tmp: figure.savefig(tmp, dpi=90))
    plt.close(figure)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--out", type=Path, default=None, help="PNG path (default: RUN_DIR/learning_curves.png)")
    parser.add_argument("--after", type=Path, default=None, help="the earlier stage this run continued (its folder or checkpoint)")
    args = parser.parse_args(argv)
    print(draw(args.run_dir, args.out or args.run_dir / "learning_curves.png", after=args.after))
    return 0


if __name__ == "__main__":
    sys.exit(main())
