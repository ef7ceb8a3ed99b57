"""Trainer callbacks of the training scripts: a wall-time budget and the run's progress record,
both of which survive ``halsr-hf train --resume``."""

import json
import time
from pathlib import Path

from transformers import TrainerCallback

from ..atomic import atomic_file

#: Written into every ``checkpoint-N`` folder: the wall time and sessions up to that checkpoint.
PROGRESS_FILE = "run_progress.json"


def _write_json(path, payload) -> None:
    atomic_file(path, lambda tmp: Path(tmp).write_text(json.dumps(payload, indent=2, default=str) + "\n"))


class RunProgressCallback(TrainerCallback):
    """Adds up wall time and steps over every session of a run (a run killed and resumed with
    ``--resume`` is one run).

    At each checkpoint it writes ``checkpoint-N/run_progress.json`` (``wall_s``: training wall time up
    to that checkpoint, summed over sessions; ``global_step``; ``sessions``: one entry per session
    with its command line, first and last step and wall time) and copies those totals into the
    output folder's ``run_args.json`` (``wall_s_total``, ``global_step``, ``sessions``). A resumed
    session starts from the numbers of the checkpoint it resumes: the work done after that checkpoint
    in a killed session is redone and counted once."""

    def __init__(self, output_dir, argv, checkpoint=None):
        self.output_dir = Path(output_dir)
        previous = {}
        if checkpoint and Path(checkpoint, PROGRESS_FILE).exists():
            previous = json.loads(Path(checkpoint, PROGRESS_FILE).read_text())
        self.elapsed_before = float(previous.get("wall_s", 0.0))
        self.sessions = list(previous.get("sessions", []))
        self.session = {"started": time.strftime("%Y-%m-%dT%H:%M:%S"), "argv": list(argv),
                        "resumed_from": str(checkpoint) if checkpoint else None,
                        "first_step": int(previous.get("global_step", 0)), "last_step": None, "wall_s": 0.0}
        self.start = None

    def elapsed(self) -> float:
        return self.elapsed_before + (time.time() - self.start if self.start is not None else 0.0)

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = time.time()

    def _payload(self, step: int) -> dict:
        self.session["last_step"] = int(step)
        self.session["wall_s"] = round(time.time() - self.start, 2) if self.start is not None else 0.0
        return {"wall_s": round(self.elapsed(), 2), "global_step": int(step), "sessions": self.sessions + [self.session]}

    def record(self, step: int, final: bool = False) -> None:
        """Copy the totals into ``run_args.json`` of the output folder (atomically)."""
        path = self.output_dir / "run_args.json"
        if not path.exists():
            return
        run_args = json.loads(path.read_text())
        payload = self._payload(step)
        run_args.update({"wall_s_total": payload["wall_s"], "global_step": payload["global_step"],
                         "sessions": payload["sessions"], "finished": bool(final)})
        _write_json(path, run_args)

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        folder = self.output_dir / f"checkpoint-{state.global_step}"
        if folder.is_dir():
            _write_json(folder / PROGRESS_FILE, self._payload(state.global_step))
        self.record(state.global_step)


class TimeLimitCallback(TrainerCallback):
    """Stop training once ``max_seconds`` of wall-clock training time have passed, counting the
    ``elapsed_before`` seconds of earlier sessions of a resumed run, after an evaluation and a
    checkpoint at that step (so ``load_best_model_at_end`` still picks the best evaluated model).
    Makes fixed-budget runs (e.g. a rented GPU) safe whatever the throughput."""

    def __init__(self, max_seconds: float, elapsed_before: float = 0.0):
        self.max_seconds = float(max_seconds)
        self.elapsed_before = float(elapsed_before)
        self.start = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = time.time()

    def on_step_end(self, args, state, control, **kwargs):
        if self.start is None or control.should_training_stop:
            return control
        if self.elapsed_before + time.time() - self.start > self.max_seconds:
            control.should_training_stop = True
            if args.eval_strategy != "no":
                control.should_evaluate = True
            if args.save_strategy != "no":
                control.should_save = True
            print(f"time limit of {self.max_seconds:.0f} s reached at step {state.global_step}: stopping")
        return control


def format_log(logs: dict, step: int, max_steps: int) -> str:
    """One log line: ``step 20/390 | epoch 0.51 | loss 0.0834 | grad_norm 0.41 | learning_rate 0.000998``;
    numbers as numbers (4 significant digits), evaluation metrics without their ``eval_`` prefix
    after ``eval``."""
    logs = {k: v for k, v in logs.items() if k != "total_flos"}
    evaluation = any(k.startswith("eval_") for k in logs)
    head = f"{'eval ' if evaluation else ''}step {step}/{max_steps}" if max_steps > 0 else f"step {step}"
    parts = [head]
    for key, value in logs.items():
        name = key[len("eval_"):] if evaluation and key.startswith("eval_") else key
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            parts.append(f"{name} {value}")
        elif isinstance(value, int):
            parts.append(f"{name} {value}")
        elif name == "epoch":
            parts.append(f"epoch {value:.2f}")
        else:
            parts.append(f"{name} {value:.4g}")
    return " | ".join(parts)


class LogLinesCallback(TrainerCallback):
    """Prints each log of the Trainer as one plain line (:func:`format_log`), instead of the
    Trainer's printed dicts of strings (``{'loss': '0.0834', ...}``); above the progress bar when
    there is one (``--disable-tqdm False``), never interleaved with it."""

    def __init__(self, progress_bar=None):
        self.progress_bar = progress_bar

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        line = format_log(logs, state.global_step, state.max_steps)
        bar = getattr(self.progress_bar, "training_bar", None)
        if bar is not None:
            bar.write(line)
        else:
            print(line, flush=True)


def plain_log_lines(trainer) -> None:
    """Replace the Trainer's log printing by :class:`LogLinesCallback`: its ``PrinterCallback``
    (with ``disable_tqdm``) goes, its progress bar (without) stays but stops writing the logs."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    bar = next((cb for cb in trainer.callback_handler.callbacks if isinstance(cb, ProgressCallback)), None)
    if bar is not None:
        bar.on_log = lambda *args, **kwargs: None  # the lines come from LogLinesCallback
    trainer.add_callback(LogLinesCallback(bar))
