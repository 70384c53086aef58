"""What a path names: a PyTorch checkpoint (a `.pt` file or a run folder), an ONNX model or an engine.

Every command that takes an artifact reads its path here, so "a run folder means its best.pt" and
"which suffix is which kind" are decided once. Nothing heavy is imported.
"""

from __future__ import annotations

from pathlib import Path

from edgemlic.errors import EdgemlicError

CHECKPOINT_SUFFIXES = (".pt", ".pth")
BEST_CHECKPOINT = "best.pt"
"""The checkpoint a run folder stands for: the best validation by the run's `select_by` measure."""
LAST_CHECKPOINT = "last.pt"
"""The latest state of a run, which `--resume` continues from."""
KINDS = ("checkpoint", "onnx", "engine")


def artifact_kind(path: str | Path) -> str:
    """ "checkpoint", "onnx" or "engine" for an existing path; anything else is a one-line error."""
    path = Path(path)
    if not path.exists():
        raise EdgemlicError(f"{path}: artifact not found")
    if path.is_dir() or path.suffix in CHECKPOINT_SUFFIXES:
        return "checkpoint"
    if path.suffix == ".onnx":
        return "onnx"
    if path.suffix == ".engine":
        return "engine"
    raise EdgemlicError(
        f"{path}: unknown artifact type; expected a .pt checkpoint, a run folder, an .onnx model or an "
        ".engine file"
    )


def checkpoint_file(path: str | Path) -> Path:
    """The checkpoint file a path names: a run folder means its best.pt, a file is itself."""
    path = Path(path)
    if not path.is_dir():
        return path
    best = path / BEST_CHECKPOINT
    if not best.is_file():
        raise EdgemlicError(
            f"{path}: run folder has no {BEST_CHECKPOINT}; train into it first or give a checkpoint file"
        )
    return best
