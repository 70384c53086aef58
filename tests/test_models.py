import pytest
import torch
import torchvision

from edgemlic.errors import EdgemlicError
from edgemlic.models import ARCHITECTURES, backbone_parameters, create_model, head_parameters


@pytest.mark.parametrize("arch", ["resnet_tiny", "resnet18"])
def test_head_has_one_logit_per_class(arch):
    model = create_model(arch, 5).eval()
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 5)


def test_resnet50_is_torchvisions_with_a_new_head():
    model = create_model("resnet50", 12)
    reference = torchvision.models.resnet50()
    assert model.fc.out_features == 12
    assert sum(p.numel() for p in backbone_parameters(model)) == sum(
        p.numel() for n, p in reference.named_parameters() if not n.startswith("fc.")
    )


def test_head_and_backbone_split_all_parameters():
    model = create_model("resnet_tiny", 3)
    head, body = head_parameters(model), backbone_parameters(model)
    assert {id(p) for p in head}.isdisjoint(id(p) for p in body)
    assert len(head) + len(body) == len(list(model.parameters()))


def test_backbone_weights_file_loads_and_head_is_replaced(tmp_path):
    source = create_model("resnet_tiny", 7)
    torch.save(source.state_dict(), tmp_path / "w.pth")
    model = create_model("resnet_tiny", 3, weights=str(tmp_path / "w.pth"))
    assert torch.equal(model.conv1.weight, source.conv1.weight)
    assert model.fc.out_features == 3


def test_weights_for_another_architecture_are_refused(tmp_path):
    torch.save(create_model("resnet_tiny", 2).state_dict(), tmp_path / "tiny.pth")
    with pytest.raises(EdgemlicError, match="do not fit"):
        create_model("resnet18", 2, weights=str(tmp_path / "tiny.pth"))


def test_missing_weights_file_and_unknown_arch():
    with pytest.raises(EdgemlicError, match="weights file not found"):
        create_model("resnet_tiny", 2, weights="/nonexistent/w.pth")
    with pytest.raises(EdgemlicError, match="resnet50"):
        create_model("vgg99", 2)


def test_imagenet_download_failure_says_how_to_pass_a_local_file(monkeypatch, tmp_path):
    """An offline machine: torchvision's download raises; the message names the URL and --weights PATH."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(EdgemlicError, match=r"--weights PATH") as err:
        create_model("resnet18", 2, weights="imagenet")
    assert ARCHITECTURES["resnet18"][1].url in str(err.value)
