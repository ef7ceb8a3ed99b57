"""Trainer callbacks of the training scripts."""

import time

from transformers import TrainerCallback


class TimeLimitCallback(TrainerCallback):
    """Stop training once ``max_seconds`` of wall-clock time have passed since the start of training,
    after an evaluation and a checkpoint at that step (so ``load_best_model_at_end`` still picks the
    best evaluated model). Makes fixed-budget runs (e.g. a rented GPU) safe whatever the throughput."""

    def __init__(self, max_seconds: float):
        self.max_seconds = float(max_seconds)
        self.start = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = time.time()

    def on_step_end(self, args, state, control, **kwargs):
        if self.start is not None and time.time() - self.start > self.max_seconds and not control.should_training_stop:
            control.should_training_stop = True
            if args.eval_strategy != "no":
                control.should_evaluate = True
            if args.save_strategy != "no":
                control.should_save = True
            print(f"time limit of {self.max_seconds:.0f} s reached at step {state.global_step}: stopping")
        return control
