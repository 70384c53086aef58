import pytest
import torch

from edgemlic.card import ModelCard
from edgemlic.checkpoint import load_checkpoint, load_model, save_checkpoint
from edgemlic.errors import EdgemlicError
from edgemlic.models import create_model


@pytest.fixture
def card():
    return ModelCard(classes=("a", "b", "c"), architecture="resnet_tiny")


def test_round_trip_restores_weights_and_card(tmp_path, card):
    model = create_model("resnet_tiny", 3)
    save_checkpoint(tmp_path / "m.pt", model, card, epoch=4)
    restored, restored_card = load_model(tmp_path / "m.pt")
    assert restored_card == card
    for (name, a), b in zip(model.state_dict().items(), restored.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert load_checkpoint(tmp_path / "m.pt")["epoch"] == 4


def test_failed_write_leaves_the_previous_checkpoint(tmp_path, card, monkeypatch):
    model = create_model("resnet_tiny", 3)
    save_checkpoint(tmp_path / "m.pt", model, card)
    before = (tmp_path / "m.pt").read_bytes()

    def crash(obj, f):
        f.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path / "m.pt", model, card)
    assert (tmp_path / "m.pt").read_bytes() == before
    assert list(tmp_path.iterdir()) == [tmp_path / "m.pt"]


def test_checkpoint_with_code_is_not_executed(tmp_path):
    """weights_only loading refuses pickled callables instead of running them."""

    class Evil:
        def __reduce__(self):
            return (open, (str(tmp_path / "pwned"), "w"))

    torch.save({"format": "edgemlic-checkpoint", "payload": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(EdgemlicError, match="not a loadable edgemlic checkpoint"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize(
    "content, message",
    [
        (b"\xff\xd8\xff not a checkpoint", "not a loadable edgemlic checkpoint"),
        (None, "not an edgemlic checkpoint"),
    ],
)
def test_foreign_files_are_named_errors(tmp_path, content, message):
    path = tmp_path / "x.pt"
    if content is None:
        torch.save({"state_dict": {}}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(EdgemlicError, match=message):
        load_checkpoint(path)


def test_newer_checkpoint_version_is_refused(tmp_path, card):
    save_checkpoint(tmp_path / "m.pt", create_model("resnet_tiny", 3), card, version=99)
    with pytest.raises(EdgemlicError, match="newer"):
        load_checkpoint(tmp_path / "m.pt")


def test_weights_that_do_not_match_the_card(tmp_path, card):
    save_checkpoint(tmp_path / "m.pt", create_model("resnet_tiny", 5), card)
    with pytest.raises(EdgemlicError, match="do not match"):
        load_model(tmp_path / "m.pt")
