#!/usr/bin/env python
"""Learning curves of a ``halsr-hf train`` run: training loss and validation Dice per class and per
validation source, from the run's ``trainer_state.json`` (the run folder's, else its newest
``checkpoint-N``'s), drawn into one PNG.

    python scripts/plot_learning_curves.py runs/mix_small --out runs/mix_small/learning_curves.png

With several validation sources the metrics are ``eval_<source>_dice_<class>`` (one line per source
and class) and ``eval_dice_mean`` (the mean that chose the best checkpoint, drawn in black, its best
epoch marked).
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


def draw(run_dir: Path, out: Path) -> Path:
    state = trainer_state(run_dir)
    loss, metrics = curves(state)
    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8))
    if loss:
        left.plot(*zip(*loss), lw=0.8)
    left.set(xlabel="epoch", ylabel="training loss (BCE + Dice)", title=f"{run_dir.name}: training loss")
    left.grid(alpha=0.3)
    for key in sorted(metrics):
        points = metrics[key]
        if key == "eval_dice_mean":
            right.plot(*zip(*points), color="black", lw=2, label="selection: mean dice (eval_dice_mean)")
            best = max(points, key=lambda p: p[1])
            right.scatter([best[0]], [best[1]], color="black", zorder=5)
            right.annotate(f"best {best[1]:.3f} (epoch {best[0]:.0f})", best, textcoords="offset points", xytext=(5, -12))
        elif not key.endswith("dice_mean"):
            right.plot(*zip(*points), lw=1, label=key.removeprefix("eval_"))
    right.set(xlabel="epoch", ylabel="validation Dice (2D, crops with the reference box)",
              title="validation Dice per source and class")
    right.grid(alpha=0.3)
    right.legend(fontsize=7, loc="lower right")
    steps = state.get("global_step")
    figure.suptitle(f"{run_dir}: {steps} steps, epoch {state.get('epoch', 0):.1f}", fontsize=10)
    figure.tight_layout()
    atomic_file(out, lambda tmp: figure.savefig(tmp, dpi=90))
    plt.close(figure)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--out", type=Path, default=None, help="PNG path (default: RUN_DIR/learning_curves.png)")
    args = parser.parse_args(argv)
    print(draw(args.run_dir, args.out or args.run_dir / "learning_curves.png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
