"""``halsr-hf benchmark --quick``: a smoke test of every part on tiny sizes (no timing is asserted)."""

import json

import pytest

from halsr_hf import cli


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
    assert set(pipe["targets"]) == {"slices_per_s_batch16>=30", "pipeline_over_segmentation_forward>=0.7", "volume10_latency_s<0.5"}
    assert "slices_per_s_batch16" in pipe["backends"]["onnx"], pipe["backends"]
    train = results["training"]["networks"]
    assert {r["name"] for r in train} == {"halsr-tiny", "unet-tiny"} and all(r["slices_per_s"] > 0 for r in train)
    assert "skipped" in results["roi_ablation"] or results["roi_ablation"]["summary"]
    readme = (tmp_path / "README.md").read_text()
    assert "| `halsr-tiny` |" in readme and "torch.set_num_threads(1)" in readme and "## 4." in readme


def test_benchmark_rejects_bad_arguments(tmp_path, capsys):
    assert cli.main(["benchmark", "--parts", "1,9", "--out", str(tmp_path)]) == 2
    assert "--parts" in capsys.readouterr().err
