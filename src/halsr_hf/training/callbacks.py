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
