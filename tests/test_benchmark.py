"""``halsr-hf benchmark --quick``: a smoke test of every part on tiny sizes (no timing is asserted)."""

import json

import pytest

from halsr_hf import cli

from .conftest import ACDC_DIR


def test_quick_benchmark_writes_well_formed_results(tmp_path):
    pytest.importorskip("dynamic_network_architectures")
    assert cli.main(["benchmark", "--quick", "--threads", "1", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    meta = results["meta"]
    assert meta["quick"] is True and meta["threads"] == 1 and meta["torch"]
    cost = results["model_cost"]
    names = {row["name"] for row in cost["networks"]}
    assert {"halsr-tiny", "unet-tiny", "nnunet-2d"} <= names
    for row in cost["networks"]:
        assert row["parameters"] > 0
        assert all(v > 0 for v in row["gflops_per_slice"].values())
        for timing in row["forward_ms_per_slice"].values():
            assert timing["median"] > 0 and timing["min"] <= timing["median"] and timing["runs"] >= 2
        assert row["ratio_to_reference"]["64x64/b1"] > 0
    assert cost["nnunet_plan"]["n_stages"] == len(cost["nnunet_plan"]["features_per_stage"])
    pipe = results["pipeline"]
    assert "random" in pipe["model"]
    for key in ("slices_per_s_batch16", "slices_per_s_batch1", "volume10_latency_s", "segmentation_forward_slices_per_s_batch16",
                "pipeline_over_segmentation_forward", "peak_rss_mb"):
        assert pipe[key] > 0, key
    assert "targets" not in pipe  # targets are the project's data (benchmarks/targets.json), judged when rendering
    other = {"onnx": "torch", "torch": "onnx"}[pipe["backend"]]  # the rows measure the default backend
    assert pipe["backend"] == "onnx" and "slices_per_s_batch16" in pipe["backends"][other], pipe["backends"]
    train = results["training"]["networks"]
    assert {r["name"] for r in train} == {"halsr-tiny", "unet-tiny"} and all(r["slices_per_s"] > 0 for r in train)
    real = results["training"]["real_configuration"]
    if (ACDC_DIR / "train_slices.list").is_file():  # real ACDC slices through the training data path
        assert real["name"] == "halsr-tiny (default training configuration)" and real["slices_per_s"] > 0
        assert 0 < real["data_wait_share"] < 1 and real["steps"] == 2 and "HalsrCropDataset" in real["data"]
        assert "real training configuration" in (tmp_path / "README.md").read_text()
    assert set(results) == {"meta", "model_cost", "pipeline", "training"}
    readme = (tmp_path / "README.md").read_text()
    assert "| `halsr-tiny` |" in readme and "torch.set_num_threads(1)" in readme and "## 3." in readme
    assert "target |" not in readme and " met" not in readme  # no targets file in tmp_path: no verdicts


def test_report_judges_results_against_a_targets_file():
    from halsr_hf.commands.benchmark_report import render_markdown

    meta = {"command": "halsr-hf benchmark", "date": "today", "quick": False, "cpu": "cpu", "cpu_count": 2, "platform": "linux",
            "torch": "2", "transformers": "5", "python": "3", "threads": 2, "device": "cpu", "load_start": [], "load_end": []}
    timing = {"256x256/b16": {"median": 10.0, "min": 9.0, "runs": 3}}
    cost = {"settings": {"mode": "eval"}, "skipped": {},
            "nnunet_plan": {"n_stages": 7, "features_per_stage": [], "strides": [], "n_conv_per_stage": 2,
                            "n_conv_per_stage_decoder": 2, "norm": "IN", "nonlin": "LReLU"},
            "networks": [{"name": name, "description": name, "reference": "b", "parameters": 1e6, "gflops_per_slice": {},
                          "forward_ms_per_slice": {"256x256/b16": {**timing["256x256/b16"], "median": ms}},
                          "ratio_to_reference": None} for name, ms in (("a", 12.0), ("b", 10.0))]}
    pipe = {"model": "m", "slices": "s", "slice_shape": [4, 4], "inputs": "i", "slices_per_s_batch16": 20.0,
            "volume10_latency_s": 0.4, "peak_rss_mb": 1, "peak_rss_mb_before_pipeline": 1}
    targets = {"model_cost": [{"what": "a / b", "numerator": "a", "denominator": "b", "setting": "256x256/b16", "max": 1.1}],
               "pipeline": {"slices_per_s_batch16": {"min": 30}, "volume10_latency_s": {"max": 0.5}}}
    train = {"settings": {"batch": 16, "size": 128, "optimizer": "AdamW", "precision": "float32", "data": "random"},
             "networks": [{"name": "a", "parameters": 1e6, "slices_per_s": 10.0, "step_time_ratio_to_unet_same_widths": 1.4},
                          {"name": "c", "parameters": 1e6, "slices_per_s": 5.0, "step_time_ratio_to_unet_same_widths": 2.0}]}
    targets["training"] = [{"what": "a step", "network": "a", "device": "cpu", "max": 1.5},
                           {"what": "c step", "network": "c", "device": "cpu", "max": 1.5},
                           {"what": "a step on the GPU", "network": "a", "device": "cuda", "max": 1.3}]
    report = render_markdown({"meta": meta, "model_cost": cost, "pipeline": pipe, "training": train}, targets=targets)
    assert "| a / b | 256x256/b16 | **1.2** | <= 1.1 | NOT met |" in report
    assert "| 20.0 | >= 30 (NOT met) |" in report and "| 0.4 | <= 0.5 (met) |" in report
    assert "| a step | **1.40** | <= 1.5 | met |" in report and "| c step | **2.00** | <= 1.5 | NOT met |" in report
    assert "a step on the GPU" not in report  # a CPU run is judged by the cpu rules only
    gpu_run = {"meta": {**meta, "command": "gpu", "torch": "2+cu"}, "training": {**train, "settings": {**train["settings"], "gpu": "H200"}}}
    report = render_markdown({"meta": meta, "pipeline": pipe}, gpu=gpu_run, targets=targets)
    assert "| a step on the GPU | **1.40** | <= 1.3 | NOT met |" in report and "| a step |" not in report
    untargeted = render_markdown({"meta": meta, "pipeline": pipe})
    assert "target |" not in untargeted and " met" not in untargeted


def test_benchmark_rejects_bad_arguments(tmp_path, capsys):
    assert cli.main(["benchmark", "--parts", "1,9", "--out", str(tmp_path)]) == 2
    assert "--parts" in capsys.readouterr().err
    assert cli.main(["benchmark", "--parts", "4", "--out", str(tmp_path)]) == 2  # the ROI ablation is `evaluate --no-roi`
    assert "--no-roi" in capsys.readouterr().err


def test_benchmark_refuses_a_busy_machine_and_flags_busy_sections(monkeypatch, tmp_path):
    """Timings beside other work are wrong by up to 10x: a busy machine is refused, or with
    --allow-busy every section is flagged unreliable in the JSON and the report."""
    from halsr_hf.commands import benchmark
    from halsr_hf.commands.benchmark_report import _header

    monkeypatch.setattr(benchmark, "_load", lambda: [7.5, 7.0, 6.0])
    ticks = iter([(100.0, 1.0), (160.0, 2.0)])  # 59 s of other processes' CPU during the section
    monkeypatch.setattr(benchmark, "_cpu_seconds", lambda: next(ticks))
    with pytest.raises(benchmark.InputError, match="busy"):
        benchmark.main(["--parts", "1", "--max-load", "1", "--wait-idle", "0", "--out", str(tmp_path / "a")])
    monkeypatch.setattr(benchmark, "part_model_cost", lambda device, quick: {"networks": [], "note": "stub"})
    monkeypatch.setattr(benchmark, "_write_report", lambda out, results, name, targets: None)
    benchmark.main(["--parts", "1", "--max-load", "1", "--wait-idle", "0", "--allow-busy", "--out", str(tmp_path / "b")])
    results = json.loads((tmp_path / "b" / "results.json").read_text())
    load = results["model_cost"]["load"]
    assert load["reliable"] is False and load["foreign_cores"] > 0.2 and results["meta"]["max_load"] == 1
    header = "\n".join(_header(results["meta"], {"model_cost": results["model_cost"]}))
    assert "model_cost: UNRELIABLE" in header


def test_the_bundled_model_is_named_without_this_machine_s_path():
    """The benchmark's results named the bundled model by its absolute path (/work/main/...)."""
    from pathlib import Path

    from halsr_hf import default_model_dir
    from halsr_hf.commands.benchmark import _pipeline_for

    _, name = _pipeline_for("cpu", quick=False)
    assert name == "bundled model (bundled:halsr_hf/default_model)" and str(default_model_dir()) not in name
    committed = json.loads((Path(__file__).resolve().parents[1] / "benchmarks" / "results.json").read_text())
    assert committed["pipeline"]["model"] == name
