"""Shared test set-up: import paths and the location of the real data in ../shared/data."""

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(os.path.dirname(REPO), "shared", "data")
for folder in (REPO, os.path.join(REPO, "scripts")):
    if folder not in sys.path:
        sys.path.insert(0, folder)


def shared_data(*parts):
    """Path to a file of the real data beside the checkout; skips the test when it is absent."""
    path = os.path.join(SHARED_DATA, *parts)
    if not os.path.exists(path):
        pytest.skip(f"real data not available: {path} is absent (it lives in ../shared/data beside the checkout)")
    return path


def pytest_configure(config):
    config.addinivalue_line("markers", "cuda: needs a CUDA GPU (and Triton); skips without one")


def assert_info_fails(path, words):
    """`event_data.py --info PATH` ends in one line `error: PATH: ...words...`, exit 2, no output."""
    result = subprocess.run([sys.executable, os.path.join(REPO, "event_data.py"), "--info", str(path)],
                            capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}") and words in lines[0], result.stderr
    assert result.stdout == ""
