import csv
import json
import math

import numpy as np
import pytest
import torch

from edgemlic.checkpoint import load_checkpoint, load_model
from edgemlic.data.coco import load_coco_split
from edgemlic.errors import EdgemlicError
from edgemlic.models import create_model
from edgemlic.train.datasets import EpochSampler, MultilabelDataset
from edgemlic.train.distributed import World
from edgemlic.train.loop import evaluate, resume, train
from edgemlic.train.losses import create_loss


def read_metrics(run_dir):
    with open(run_dir / "metrics.csv") as f:
        return list(csv.DictReader(f))


def final_weights(run_dir):
    return load_checkpoint(run_dir / "last.pt")["model"]


def test_run_directory_holds_everything(synth_root, tmp_path, tiny_config):
    result = train(tiny_config(synth_root, tmp_path / "run", val_every=3), progress=False)
    run, best = tmp_path / "run", result.best
    assert best == run / "best.pt"
    for name in ("best.pt", "last.pt", "config.json", "card.json", "metrics.csv", "curves.png"):
        assert (run / name).stat().st_size > 0, name
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = read_metrics(run)
    total = 2 * math.ceil(len(load_coco_split(synth_root, "train2017").samples) / 8)
    assert [int(r["step"]) for r in rows] == [*range(3, total, 3), total][: len(rows)]
    assert int(rows[-1]["step"]) == total
    assert json.loads((run / "card.json").read_text())["classes"] == list(load_model(best)[1].classes)
    payload = load_checkpoint(run / "last.pt")
    assert payload["train_state"]["finished"] and payload["train_state"]["step"] == total
    # best.pt is the first validation with the highest micro-F1 in metrics.csv
    f1 = [float(r["val_micro_f1"]) for r in rows]
    assert load_checkpoint(best)["train_state"]["step"] == int(rows[int(np.argmax(f1))]["step"])
    assert result.select_by == "micro_f1" and result.best_value == pytest.approx(max(f1))
    assert not result.stopped_early and "finished at epoch 2" in result.summary()


def test_best_checkpoint_by_loss_when_asked(synth_root, tmp_path, tiny_config):
    result = train(tiny_config(synth_root, tmp_path / "run", val_every=2, select_by="loss"), progress=False)
    rows = read_metrics(tmp_path / "run")
    losses = [float(r["val_loss"]) for r in rows]
    assert load_checkpoint(result.best)["train_state"]["step"] == int(rows[int(np.argmin(losses))]["step"])
    assert "chosen by validation loss" in result.summary()


def test_same_seed_same_weights(synth_root, tmp_path, tiny_config):
    a = final_weights(train(tiny_config(synth_root, tmp_path / "a", max_steps=4), progress=False).best.parent)
    b = final_weights(train(tiny_config(synth_root, tmp_path / "b", max_steps=4), progress=False).best.parent)
    c = final_weights(
        train(tiny_config(synth_root, tmp_path / "c", max_steps=4, seed=1), progress=False).best.parent
    )
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_interrupted_run_resumes_to_the_same_weights(synth_root, tmp_path, monkeypatch, tiny_config):
    """Kill training mid-epoch after a checkpoint, resume, and land on the uninterrupted run's weights."""
    config = dict(val_every=4, epochs=2)
    reference = final_weights(
        train(tiny_config(synth_root, tmp_path / "ref", **config), progress=False).best.parent
    )

    calls = {"n": 0}
    original = MultilabelDataset.__getitem__

    def dies_in_step_5(self, key):
        calls["n"] += isinstance(key, tuple)  # training items carry an augmentation seed
        if calls["n"] == 4 * 8 + 3:  # mid-epoch, after the checkpoint written at step 4
            raise KeyboardInterrupt
        return original(self, key)

    monkeypatch.setattr(MultilabelDataset, "__getitem__", dies_in_step_5)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(synth_root, tmp_path / "run", **config), progress=False)
    monkeypatch.setattr(MultilabelDataset, "__getitem__", original)
    assert load_checkpoint(tmp_path / "run" / "last.pt")["train_state"]["step"] == 4

    resume(tmp_path / "run", progress=False)
    resumed = final_weights(tmp_path / "run")
    for k in reference:
        torch.testing.assert_close(resumed[k], reference[k], rtol=0, atol=0, msg=k)


def test_training_lowers_the_loss_on_its_data(synth_root, tmp_path, tiny_config):
    """The trained weights fit the training images better than the initial ones (same seed, same init)."""
    config = tiny_config(
        synth_root, tmp_path / "run", arch="resnet_tiny_gn", epochs=4, rotation=0.0, hflip=False
    )
    best = train(config, progress=False).best
    split = load_coco_split(synth_root, "train2017")
    loader = torch.utils.data.DataLoader(
        MultilabelDataset(split.samples, load_model(best)[1].preprocessing), 16
    )
    torch.manual_seed(config.seed)  # what train() does before building the model
    initial = create_model("resnet_tiny_gn", len(split.classes))
    trained = create_model("resnet_tiny_gn", len(split.classes))
    trained.load_state_dict(load_checkpoint(tmp_path / "run" / "last.pt")["model"])
    loss = create_loss("bce")
    before = evaluate(initial, loss, loader, torch.device("cpu"))[0]
    after = evaluate(trained, loss, loader, torch.device("cpu"))[0]
    assert after < 0.9 * before  # measured 0.52 vs 0.70; a loop that does not learn stays near 1.0


def test_early_stopping_after_patience(synth_root, tmp_path, tiny_config):
    # lr ~0 cannot keep improving: the run stops two validations after its best one, and says so.
    run = tmp_path / "run"
    result = train(tiny_config(synth_root, run, lr=1e-12, val_every=1, patience=2, epochs=5), progress=False)
    rows = read_metrics(run)
    f1 = [float(r["val_micro_f1"]) for r in rows]
    best = int(np.argmax(f1))
    assert result.stopped_early and len(rows) == best + 1 + 2
    assert result.best_epoch == float(rows[best]["epoch"])
    assert result.summary().startswith(f"training stopped early at epoch {float(rows[-1]['epoch']):g};")


def test_existing_run_is_not_overwritten(synth_root, tmp_path, tiny_config):
    run = tmp_path / "run"
    train(tiny_config(synth_root, run, max_steps=2), progress=False)
    before = (run / "last.pt").read_bytes()
    with pytest.raises(EdgemlicError, match="--resume"):
        train(tiny_config(synth_root, run, max_steps=2), progress=False)
    assert (run / "last.pt").read_bytes() == before


def test_finished_run_cannot_resume(synth_root, tmp_path, tiny_config):
    run = tmp_path / "run"
    train(tiny_config(synth_root, run, max_steps=2), progress=False)
    with pytest.raises(EdgemlicError, match="already finished"):
        resume(run, progress=False)


def test_epoch_sampler_is_a_seeded_permutation_that_can_start_midway():
    sampler = EpochSampler(10, seed=3, rank_batch=4)
    sampler.set_position(epoch=1)
    full = list(sampler)
    assert sorted(i for i, _ in full) == list(range(10))  # one process keeps the last partial batch
    sampler.set_position(epoch=1, batch=1)
    assert list(sampler) == full[4:] and len(sampler) == 6
    sampler.set_position(epoch=2)
    assert list(sampler) != full


def test_ranks_split_each_global_batch_like_one_process():
    one = EpochSampler(11, seed=0, rank_batch=4)
    ranks = [EpochSampler(11, seed=0, rank_batch=2, world=World(rank=r, size=2)) for r in range(2)]
    single, shares = list(one), [list(s) for s in ranks]
    # two whole global batches of 4; the partial third is dropped with several processes
    assert [shares[0][0:2] + shares[1][0:2], shares[0][2:4] + shares[1][2:4]] == [single[0:4], single[4:8]]
    assert [len(s) for s in ranks] == [4, 4]
