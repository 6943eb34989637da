"""The speed benchmark runs on a tiny workload and reports every field (not a timing test)."""

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO

FIELDS = ("device", "torch", "event_load_s", "event_frames_s", "ms_per_iter", "ms_per_iter_median",
          "windows", "ms_per_window_iter", "total_s", "peak_mem_mb", "peak_device_mem_mb", "quality")


@pytest.mark.slow
def test_benchmark_reports_every_field_and_ratios():
    result = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "benchmark.py"), "--H", "24", "--W", "32",
                             "--events", "20000", "--duration", "0.5", "--iters", "4", "--configs", "default", "--plain", "--window 0.25 --windows_batch 2"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    workload, configs, ratios = lines[0], lines[1:-1], lines[-1]
    assert 15000 < workload["workload"]["events"] < 25000
    assert [c["config"] for c in configs] == ["default", "--plain", "--window 0.25 --windows_batch 2"]
    assert [c["windows"] for c in configs] == [1, 1, 2]
    for config in configs:
        assert all(field in config for field in FIELDS)
        assert config["device"] and config["ms_per_iter"] > 0 and config["peak_mem_mb"] > 0
        assert 0 <= config["quality"]["mse"] <= 1 and config["quality"]["n_frames"] > 0
    assert ratios["ratios_vs"] == "default" and ratios["--plain"]["ms_per_iter"] > 0
    stacked = configs[2]  # one optimisation step advances both windows
    assert stacked["ms_per_window_iter"] == pytest.approx(stacked["ms_per_iter"] / 2, rel=0.01)
