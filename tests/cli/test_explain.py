"""`edgemlic explain` draws what `explain_image` draws, and bad class names or images are one line."""

import numpy as np
import pytest
from PIL import Image

from edgemlic.explain import explain_image


def test_cli_matches_library(checkpoint_96, wide_image, tmp_path, cli):
    path, scores = explain_image(checkpoint_96, wide_image, ["ring", "star"], tmp_path / "lib")
    assert path == tmp_path / "lib" / "wide.gradcam.png" and list(scores) == ["ring", "star"]
    code, out, _ = cli(
        [
            "explain",
            str(checkpoint_96),
            str(wide_image),
            "--classes",
            "ring,star",
            "--out",
            str(tmp_path / "cli"),
        ]
    )
    assert code == 0
    assert f"ring {scores['ring']:.4f}" in out and f"star {scores['star']:.4f}" in out
    for figure in (path, tmp_path / "cli" / "wide.gradcam.png"):
        with Image.open(figure) as img:
            assert img.format == "PNG" and img.width > 2 * img.height  # three wide panels in a row
            assert np.asarray(img.convert("L"), np.float32).std() > 10


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--classes", "ring,unicorn"],
            "unknown class 'unicorn' (names are case-sensitive; this model knows: ",
        ),
        (["--classes", "ring,Circle"], "unknown class 'Circle'; did you mean 'circle'?"),
        (["--classes", "ring,,star"], "empty name"),
    ],
)
def test_bad_class_names_list_the_valid_ones(args, message, checkpoint_96, wide_image, tmp_path, cli):
    code, _, err = cli(["explain", str(checkpoint_96), str(wide_image), "--out", str(tmp_path), *args])
    assert code == 1 and err.count("\n") == 1 and message in err
    assert not list(tmp_path.iterdir())


def test_undecodable_image_is_one_named_line(checkpoint_96, tmp_path, cli):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    code, _, err = cli(["explain", str(checkpoint_96), str(bad), "--out", str(tmp_path / "out")])
    assert code == 1 and err.count("\n") == 1
    assert str(bad) in err and "image" in err
