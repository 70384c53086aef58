"""`edgemlic demo` prints what its run wrote, and a place it cannot write is one line."""

import json
import re

from edgemlic.data.synth import generate_shapes_dataset

SHOWN = ("micro_f1", "jaccard", "mAP", "micro_precision", "micro_recall")


def test_demo_prints_its_run_and_refuses_an_out_that_is_a_file(tmp_path, cli):
    """A small dataset already in DIR/data is reused, which keeps the demo's training to seconds."""
    data = generate_shapes_dataset(tmp_path / "data", train_images=8, val_images=6, image_size=64, seed=0)
    code, out, err = cli(["demo", "--out", tmp_path, "--workers", 0])
    assert code == 0, err
    (run,) = tmp_path.glob("run-*")
    report = json.loads((run / "val_metrics.json").read_text())
    row = next(line for line in out.splitlines() if f"{report['micro_f1']:.4f}" in line)
    assert re.findall(r"\d\.\d{4}", row) == [f"{report[key]:.4f}" for key in SHOWN]
    named = [line.split(":")[0] for line in out.splitlines() if line.split(":")[0].endswith(".jpg")]
    assert named == [p.name for p in sorted((data / "val2017").glob("*.jpg"))[:3]]  # the predictions
    said = out.replace("\n", "")
    assert str(data) in said and str(run / "best.pt") in said and (run / "best.pt").is_file()
    assert all((run / name).is_file() for name in ("metrics.csv", "curves.png", "val_scores.npz"))

    taken = tmp_path / "taken"
    taken.write_text("a file")
    code, _, err = cli(["demo", "--out", taken])
    assert code == 1 and err.count("\n") == 1
    assert err.startswith(f"edgemlic: error: {taken / 'data'}: cannot write here") and "Traceback" not in err
    assert taken.read_text() == "a file"
