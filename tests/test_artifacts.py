"""What a path names, decided by the one formats table."""

from __future__ import annotations

import pytest

from edgemlic.artifacts import FORMATS, artifact_format, checkpoint_file
from edgemlic.errors import EdgemlicError


@pytest.mark.parametrize(
    ("name", "kind", "backend"),
    [("m.pt", "checkpoint", "pytorch"), ("m.pth", "checkpoint", "pytorch"), ("m.onnx", "onnx", "onnxruntime"),
     ("m.engine", "engine", "tensorrt")],
)  # fmt: skip
def test_a_file_is_known_by_its_suffix(tmp_path, name, kind, backend):
    (tmp_path / name).write_bytes(b"x")
    fmt = artifact_format(tmp_path / name)
    assert (fmt.kind, fmt.backends[0]) == (kind, backend)


def test_a_run_folder_is_its_best_checkpoint(tmp_path):
    assert artifact_format(tmp_path).kind == "checkpoint"
    with pytest.raises(EdgemlicError, match="run folder has no best.pt"):
        checkpoint_file(tmp_path)
    (tmp_path / "best.pt").write_bytes(b"x")
    assert checkpoint_file(tmp_path) == tmp_path / "best.pt"


def test_unknown_and_missing_paths_are_one_line(tmp_path):
    (tmp_path / "m.tflite").write_bytes(b"x")
    with pytest.raises(
        EdgemlicError, match=r"unknown artifact type; expected .* \.pt, \.pth, \.onnx, \.engine"
    ):
        artifact_format(tmp_path / "m.tflite")
    with pytest.raises(EdgemlicError, match="artifact not found"):
        artifact_format(tmp_path / "gone.onnx")


def test_only_checkpoints_need_torch():
    assert [f.kind for f in FORMATS if f.needs_torch] == ["checkpoint"]
