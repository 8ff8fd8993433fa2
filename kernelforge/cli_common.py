"""What the command-line modules share: the usage error, ``--db`` folders, model files."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from kernelforge.errors import KernelforgeError

if TYPE_CHECKING:
    import onnx


class UsageError(KernelforgeError):
    """A command line names something that does not exist or does not fit (exit code 2, like argparse's)."""


def db_folder(text: str, create: bool) -> Path:
    """Return a ``--db`` directory; a command that writes (``create``) makes a missing one, one that reads fails.

    Raises:
        UsageError: When it is a file, missing (reading commands), cannot be created or is not writable.
    """
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise UsageError(f"--db {text}: not a directory")
    if not path.exists():
        if not create:
            raise UsageError(f"--db {text}: no such directory")
        try:
            path.mkdir(parents=True)
            print(f"created tuning database {path}")
        except FileExistsError:  # another worker of the same study made it a moment ago
            if not path.is_dir():
                raise UsageError(f"--db {text}: not a directory") from None
        except OSError as exc:
            raise UsageError(f"--db {text}: cannot create it ({exc.strerror or exc})") from None
    if create and not os.access(path, os.W_OK | os.X_OK):
        raise UsageError(f"--db {text}: not writable")
    return path


def model_path(text: str) -> Path:
    """Return the path of a model file given on the command line (an existing file)."""
    path = Path(text)
    if not path.is_file():
        raise UsageError(f"{text}: no such model file")
    return path


def load_onnx(path: Path) -> onnx.ModelProto:
    """Read an ONNX file; anything else is a usage error naming the file."""
    import onnx

    try:
        return onnx.load(str(path))
    except Exception as exc:  # protobuf raises its own DecodeError family; say which file
        raise UsageError(f"{path}: not an ONNX model ({exc})") from None
