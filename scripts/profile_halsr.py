#!/usr/bin/env python
"""Where HALSR-Net's training time goes, per paper component, on this machine.

Two views, one process, float32, NCHW, AdamW, BCE + Dice:

1. Training step (forward + backward + optimiser) at 128x128 with each of HALSR-Net's three
   modules switched off in turn (``use_hapm``, ``use_attention_gates``, ``use_reconstruction``)
   and all off (the plain U-Net): the difference to the full network is what the module costs,
   forward and backward together.
2. ``torch.profiler`` over forward passes, every module's forward wrapped in a ``record_function``
   named after its path, summed per module kind (HAPM and its branches, attention gates,
   reconstruction, conv blocks, ...), and the top operators of a whole training step.

    python scripts/profile_halsr.py --threads 2 > benchmarks/profile_halsr_small_128.txt

Run it on an idle machine (it prints the load average and other processes' CPU, as ``halsr-hf
benchmark`` measures them); the numbers are meaningless beside other work.
"""

import argparse
import os
import sys
import time
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from halsr_hf import HalsrConfig, HalsrForSemanticSegmentation
from halsr_hf.commands.benchmark import _cpu_seconds, _foreign_cores

VARIANTS = {
    "full HALSR-Net": {},
    "without HAPM": {"use_hapm": False},
    "without attention gates": {"use_attention_gates": False},
    "without reconstruction": {"use_reconstruction": False},
    "plain U-Net (all three off)": {"use_hapm": False, "use_attention_gates": False, "use_reconstruction": False},
}


def step_time(model, pixel_values, labels, steps: int) -> float:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()
    for _ in range(2):  # warm-up
        model(pixel_values=pixel_values, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        model(pixel_values=pixel_values, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    times.sort()
    return times[len(times) // 2]


def kind(name: str, module) -> str:
    """The paper component a module belongs to (its outermost named part that says so)."""
    for part in ("spatial_attention", "channel_attention", "aspp", "spp", "fuse"):
        if f".{part}" in f".{name}" and "hapm" in name:
            return f"HAPM: {part}"
    for part, label in (("gate", "attention gate"), ("reconstruction", "reconstruction"),
                        ("hapm", "HAPM, whole module (its branches below are inside it)"),
                        ("up", "decoder upsampling"), ("head", "head")):
        if part in name.split("."):
            return label
    return type(module).__name__


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=6)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    pixel_values = torch.randn(args.batch, 1, args.size, args.size)
    labels = torch.randint(0, 3, (args.batch, args.size, args.size))
    print(f"preset {args.preset}, {args.size}x{args.size}, batch {args.batch}, {args.threads} threads, "
          f"torch {torch.__version__}; load average before {os.getloadavg()}")
    cpu0, t0 = _cpu_seconds(), time.perf_counter()

    print("\n## Training step per variant (median of", args.steps, "steps)\n")
    print("| variant | step (s) | slices/s | ratio to plain U-Net | module's share of the full step |")
    print("|---|---:|---:|---:|---:|")
    measured = {}
    for name, flags in VARIANTS.items():
        model = HalsrForSemanticSegmentation(HalsrConfig.from_preset(args.preset, **flags))
        measured[name] = step_time(model, pixel_values, labels, args.steps)
    full, plain = measured["full HALSR-Net"], measured["plain U-Net (all three off)"]
    for name, seconds in measured.items():
        share = "" if name in ("full HALSR-Net", "plain U-Net (all three off)") else f"{(full - seconds) / full:.0%}"
        print(f"| {name} | {seconds:.3f} | {args.batch / seconds:.1f} | {seconds / plain:.2f} | {share} |")

    model = HalsrForSemanticSegmentation(HalsrConfig.from_preset(args.preset)).eval()
    names = {module: name for name, module in model.named_modules() if name}
    originals = {}
    for module, name in names.items():
        if not list(module.children()) or kind(name, module) != type(module).__name__:
            original = module.forward
            originals[module] = original

            def wrapped(*inputs, __original=original, __name=name, **kwargs):
                with record_function(f"module::{__name}"):
                    return __original(*inputs, **kwargs)

            module.forward = wrapped
    with torch.inference_mode():
        for _ in range(2):
            model(pixel_values=pixel_values)
        with profile(activities=[ProfilerActivity.CPU]) as forward_profile:
            for _ in range(3):
                model(pixel_values=pixel_values)
    for module, original in originals.items():
        module.forward = original
    totals = defaultdict(float)
    seen = set()
    for event in forward_profile.key_averages():
        if not event.key.startswith("module::"):
            continue
        name = event.key[len("module::"):]
        module = dict(model.named_modules())[name]
        label = kind(name, module)
        # count a module only when no ancestor with the same label was counted (no double counting)
        parent = name.rsplit(".", 1)[0] if "." in name else ""
        if parent and kind(parent, dict(model.named_modules())[parent]) == label and f"module::{parent}" in {
                e.key for e in forward_profile.key_averages()}:
            continue
        seen.add(name)
        totals[label] += event.cpu_time_total / 3 / 1e3
    forward_total = sum(e.cpu_time_total for e in forward_profile.key_averages() if e.key == "module::encoder") / 3 / 1e3
    print("\n## Forward pass per component (torch.profiler, ms per batch, inference mode)\n")
    print("| component | ms | ")
    print("|---|---:|")
    for label, ms in sorted(totals.items(), key=lambda kv: -kv[1])[:14]:
        print(f"| {label} | {ms:.1f} |")
    if forward_total:
        print(f"\n(encoder alone: {forward_total:.1f} ms)")

    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    with profile(activities=[ProfilerActivity.CPU]) as step_profile:
        model(pixel_values=pixel_values, labels=labels).loss.backward()
        optimizer.step()
    print("\n## Top operators of one training step (self CPU time)\n")
    print("```text")
    print(step_profile.key_averages().table(sort_by="self_cpu_time_total", row_limit=15, max_name_column_width=40))
    print("```")
    print(f"\nother processes' CPU during the run: {_foreign_cores(cpu0, _cpu_seconds(), time.perf_counter() - t0)} cores; "
          f"load average after {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
