"""
Installs the checkout's flat modules as one package, `evinr` (pyproject.toml has the metadata):
the modules import each other by their flat names, as `python train.py` in a checkout needs, and
the build rewrites those imports to `evinr.` ones, so that nothing generic (`utils`, `model`) is
installed at the top level. scripts/ and assets/ become evinr.scripts and evinr.assets.
"""

import os
import re

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))


def module_names(folder):
    return {name[:-3] for name in os.listdir(os.path.join(HERE, folder)) if name.endswith(".py")} - {"setup"}


TOP = module_names(".") - {"__init__"} | {"event_formats"}
SCRIPTS = module_names("scripts")


def package_of(name):
    return "evinr" if name in TOP else "evinr.scripts" if name in SCRIPTS else None


def rewrite(line):
    """One line of a module with its imports of the project's own modules made absolute:
    `import utils` -> `from evinr import utils`, `from plan import x` -> `from evinr.plan import x`;
    `import repo` (which puts a checkout on the path) is dropped."""
    match = re.match(r"^(\s*)import (\w+)(\s+as\s+\w+)?(\s*#.*)?$", line)
    if match and package_of(match[2]):
        if match[2] == "repo":
            return None
        return f"{match[1]}from {package_of(match[2])} import {match[2]}{match[3] or ''}"
    match = re.match(r"^(\s*)from (\w+)((?:\.\w+)*) import (.*)$", line)
    if match and package_of(match[2]):
        return f"{match[1]}from {package_of(match[2])}.{match[2]}{match[3]} import {match[4]}"
    return line


class BuildPy(build_py):
    def find_package_modules(self, package, package_dir):
        modules = super().find_package_modules(package, package_dir)
        return [module for module in modules if not (package == "evinr" and module[1] == "setup")]

    def build_module(self, module, module_file, package):
        written = super().build_module(module, module_file, package)
        path = written[0]
        if path.endswith(".py"):
            with open(path) as f:
                lines = [rewrite(line) for line in f.read().split("\n")]
            with open(path, "w") as f:
                f.write("\n".join(line for line in lines if line is not None))
        return written


setup(cmdclass={"build_py": BuildPy})
