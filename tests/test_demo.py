import json

from edgemlic.demo import run_demo

TINY = dict(arch="resnet_tiny", input_size=32, resize_size=36, epochs=1, batch_size=8)


def test_demo_runs_every_stage_and_reuses_its_dataset(tmp_path):
    first = run_demo(tmp_path, train_images=24, val_images=12, workers=0, progress=False, training=TINY)
    report = json.loads((first.run_dir / "val_metrics.json").read_text())
    assert report["micro_f1"] == first.evaluation.report["micro_f1"]
    assert (first.run_dir / "val_scores.npz").stat().st_size > 0
    assert first.checkpoint == first.run_dir / "best.pt" and first.checkpoint.exists()
    assert len(first.predictions) == 3
    for p in first.predictions:
        assert p.labels == [c for c, s in p.scores.items() if s >= 0.5]
    dataset = (first.data_dir / "annotations" / "instances_train2017.json").read_bytes()
    second = run_demo(tmp_path, train_images=24, val_images=12, workers=0, progress=False, training=TINY)
    assert second.run_dir != first.run_dir  # a new run beside the first, which stays untouched
    assert (first.data_dir / "annotations" / "instances_train2017.json").read_bytes() == dataset
