"""What a path names: a PyTorch checkpoint (a `.pt` file or a run folder), an ONNX model or an engine.

Every command that takes an artifact reads its path here, so "a run folder means its best.pt" and
"which suffix is which kind" are decided once. Nothing heavy is imported.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgemlic.errors import EdgemlicError

BEST_CHECKPOINT = "best.pt"
"""The checkpoint a run folder stands for: the best validation by the run's `select_by` measure."""
LAST_CHECKPOINT = "last.pt"
"""The latest state of a run, which `--resume` continues from."""


@dataclass(frozen=True)
class Format:
    """One kind of artifact: how its path is recognised, what runs it, and what installs that."""

    kind: str
    suffixes: tuple[str, ...]
    backends: tuple[str, ...]
    """The backends that open it; the first is the default."""
    extra: str
    """The pyproject extra that installs its default backend."""
    needs_torch: bool


FORMATS = (
    Format("checkpoint", (".pt", ".pth"), ("pytorch",), "train", True),
    Format("onnx", (".onnx",), ("onnxruntime", "openvino"), "onnx", False),
    Format("engine", (".engine",), ("tensorrt",), "tensorrt", False),
)
"""Every artifact edgemlic reads, as Ultralytics' `export_formats()` serves its exporter and loader alike.
A run folder is a checkpoint (its best.pt)."""


def artifact_format(path: str | Path) -> Format:
    """The format of an existing path; anything else is a one-line error."""
    path = Path(path)
    if not path.exists():
        raise EdgemlicError(f"{path}: artifact not found")
    for fmt in FORMATS:
        if path.suffix in fmt.suffixes or (path.is_dir() and fmt.kind == "checkpoint"):
            return fmt
    known = ", ".join(s for fmt in FORMATS for s in fmt.suffixes)
    raise EdgemlicError(f"{path}: unknown artifact type; expected a run folder or a file ending in {known}")


def artifact_kind(path: str | Path) -> str:
    """ "checkpoint", "onnx" or "engine" for an existing path."""
    return artifact_format(path).kind


def format_of(kind: str) -> Format:
    return next(fmt for fmt in FORMATS if fmt.kind == kind)


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
