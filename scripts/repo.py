"""Imported first by every script: puts the repository root (train.py and its modules) on the
import path when a script is run from a checkout (`python scripts/NAME.py`). Once the project
is installed with pip, those modules are importable anyway and this changes nothing."""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
