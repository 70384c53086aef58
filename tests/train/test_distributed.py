"""Data-parallel training on CPU processes with gloo equals one process with the same global batch."""

import subprocess
import sys

import pytest
import torch

from edgemlic.checkpoint import load_checkpoint
from edgemlic.errors import EdgemlicError
from edgemlic.train.distributed import World, join, per_rank_batch
from edgemlic.train.launch import train_on_processes
from edgemlic.train.loop import train


@pytest.fixture
def gn_config(tiny_config):
    """The tiny config with GroupNorm (per-process BatchNorm statistics would differ) and a few steps."""

    def make(root, out, **overrides):
        settings = dict(arch="resnet_tiny_gn", epochs=1, max_steps=4, val_every=2)
        return tiny_config(root, out, **(settings | overrides))

    return make


@pytest.mark.slow
def test_two_processes_match_one(synth_root, tmp_path, gn_config):
    train(gn_config(synth_root, tmp_path / "one"), progress=False)
    result = train_on_processes(gn_config(synth_root, tmp_path / "two"), nproc=2)
    assert result.best == tmp_path / "two" / "best.pt"
    one, two = load_checkpoint(tmp_path / "one" / "last.pt"), load_checkpoint(tmp_path / "two" / "last.pt")
    assert two["world_size"] == 2 and one["world_size"] == 1
    for key, value in one["model"].items():
        torch.testing.assert_close(two["model"][key], value, rtol=1e-4, atol=1e-5, msg=key)
    for a, b in zip(one["train_state"]["history"], two["train_state"]["history"], strict=True):
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-4)
        assert a["val_micro_f1"] == pytest.approx(b["val_micro_f1"], abs=1e-9)


@pytest.mark.slow
def test_torchrun_entry_point(synth_root, tmp_path):
    out = tmp_path / "run"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        "-m", "edgemlic", "train", "--coco-root", str(synth_root), "--out", str(out),
        "--arch", "resnet_tiny_gn", "--weights", "none", "--input-size", "32", "--resize-size", "36",
        "--batch-size", "8", "--max-steps", "2", "--workers", "0", "--device", "cpu",
    ]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True, timeout=300)
    assert load_checkpoint(out / "last.pt")["world_size"] == 2


def test_batch_must_split_evenly(synth_root, tmp_path, gn_config):
    with pytest.raises(EdgemlicError, match="split evenly over 2 processes"):
        train_on_processes(gn_config(synth_root, tmp_path / "r", batch_size=7), nproc=2)
    assert per_rank_batch(8, World(size=4)) == 2


def test_unreachable_rendezvous_is_a_named_error(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "9")  # discard port: nothing listens
    monkeypatch.setenv("EDGEMLIC_RENDEZVOUS_TIMEOUT", "2")
    with pytest.raises(EdgemlicError, match=r"cannot join the process group at 127\.0\.0\.1:9"):
        join("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without a GPU")
def test_gpus_requested_where_none_exist(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(EdgemlicError, match="GPU"):
        join("cuda")
