"""The shape the project keeps: modules with one job each and within their budgets, functions
short enough to read, and user documentation without local paths or work history."""

import ast
import glob
import os
import re

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULES = sorted(glob.glob(os.path.join(REPO, "*.py")) + glob.glob(os.path.join(REPO, "event_formats", "*.py"))
                 + glob.glob(os.path.join(REPO, "scripts", "*.py")))
DOCUMENTS = [os.path.join(REPO, name) for name in ("README.md", "CONTRIBUTING.md")] + sorted(
    glob.glob(os.path.join(REPO, "docs", "*.md")))
MODULE_LINES, TRAIN_LINES, FUNCTION_LINES, README_LINES = 800, 700, 60, 400


def line_count(path):
    with open(path, encoding="utf-8") as f:
        return sum(1 for _ in f)


@pytest.mark.parametrize("path", MODULES, ids=lambda path: os.path.relpath(path, REPO))
def test_every_module_is_within_its_budget(path):
    budget = TRAIN_LINES - 1 if os.path.relpath(path, REPO) == "train.py" else MODULE_LINES
    assert line_count(path) <= budget


@pytest.mark.parametrize("path", MODULES, ids=lambda path: os.path.relpath(path, REPO))
def test_no_function_is_longer_than_a_screen(path):
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    long = [f"{node.name} ({node.end_lineno - node.lineno + 1} lines)" for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > FUNCTION_LINES]
    assert not long


def test_the_readme_is_short():
    assert line_count(os.path.join(REPO, "README.md")) <= README_LINES


# A folder on one machine: a home or work folder, a temporary folder, or the data beside a checkout.
LOCAL_PATH = re.compile(r"(?<![\w.])(/work/|/root/|/home/\w|/tmp/\w|\.\./shared)")


@pytest.mark.parametrize("path", DOCUMENTS + MODULES, ids=lambda path: os.path.relpath(path, REPO))
def test_no_local_machine_path_is_written_down(path):
    with open(path, encoding="utf-8") as f:
        found = [f"line {k}: {line.strip()}" for k, line in enumerate(f, 1) if LOCAL_PATH.search(line)]
    assert not found
