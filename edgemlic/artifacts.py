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
class Runner:
    """A backend that opens a format."""

    name: str
    """As rows, --backend and variants name it: "pytorch", "onnxruntime", "openvino", "tensorrt"."""
    backend: str
    """Its `Backend` subclass as "module:Class", imported only when it runs: naming it here imports nothing,
    so a format whose library is not installed still has its path recognised."""


@dataclass(frozen=True)
class Format:
    """One kind of artifact: how its path is recognised and what runs it."""

    kind: str
    suffixes: tuple[str, ...]
    runners: tuple[Runner, ...]
    """The backends that open it; the first is the default."""
    needs_torch: bool
    description: str
    """What it is, in the plural, for messages: "TensorRT engines"."""

    @property
    def backends(self) -> tuple[str, ...]:
        return tuple(runner.name for runner in self.runners)

    def runner(self, name: str) -> Runner:
        """The backend called `name`; any other name is one line listing this format's backends."""
        for runner in self.runners:
            if runner.name == name:
                return runner
        raise EdgemlicError(
            f"unknown backend {name!r} for {self.description}; choose {', '.join(self.backends)}"
        )


FORMATS = (
    Format(
        "checkpoint",
        (".pt", ".pth"),
        (Runner("pytorch", "edgemlic.runtime.torch_backend:TorchBackend"),),
        True,
        "checkpoints (.pt or a run folder)",
    ),
    Format(
        "onnx",
        (".onnx",),
        (
            Runner("onnxruntime", "edgemlic.runtime.onnx_backend:OnnxBackend"),
            Runner("openvino", "edgemlic.runtime.openvino_backend:OpenVinoBackend"),
        ),
        False,
        ".onnx models",
    ),
    Format(
        "engine",
        (".engine",),
        (Runner("tensorrt", "edgemlic.runtime.tensorrt_backend:TensorRTBackend"),),
        False,
        "TensorRT engines",
    ),
)
"""Every artifact edgemlic reads and the backends that run it, as Ultralytics' `export_formats()` serves its
exporter and loader alike. A run folder is a checkpoint (its best.pt). A new backend is its module in
`runtime/` and its Runner here; `runtime.loader` finds it through this table."""


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
    """The format of a kind: "checkpoint", "onnx" or "engine"."""
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
