"""APM: every backbone's outputs, the real ImageNet teacher, inits and checkpoints."""
from __future__ import annotations

import io

import numpy as np
import pytest
import skimage.data
import torch
import torchvision
from torchvision.transforms import functional as TF

from apm.models import (
    APM,
    APMConfig,
    CheckpointError,
    WeightsMismatchError,
    checkpoint_bytes,
    create_apm,
    fold_batch_norm,
    input_normalisation,
    is_high,
    list_backbones,
    load_checkpoint,
    mean_score,
    save_checkpoint,
    std_score,
    trained_image_size,
)

IMAGENET_CATEGORIES = torchvision.models.ResNet50_Weights.IMAGENET1K_V1.meta["categories"]
#: The big ResNets get one image, to keep the suite fast on 2 cores.
BATCH = {"resnet50": 1, "resnet101": 1}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_registry_lists_every_backbone():
    assert list_backbones() == ["efficientnet_lite0", "resnet101", "resnet18", "resnet34", "resnet50"]
    assert input_normalisation("resnet50").mean == (0.485, 0.456, 0.406)
    with pytest.raises(ValueError, match="unknown backbone 'vgg16'; choose one of efficientnet_lite0"):
        APMConfig(backbone="vgg16")


@pytest.mark.parametrize("backbone", list_backbones())
def test_backbone_gives_semantic_logits_and_distributions(backbone):
    model = APM(APMConfig(backbone=backbone)).eval()
    n = BATCH.get(backbone, 2)
    with torch.no_grad():
        out = model(torch.randn(n, 3, 64, 64))
    assert out.semantic_logits.shape == (n, 1000)
    assert out.dist.shape == (n, 10)
    assert torch.isfinite(out.semantic_logits).all() and torch.all(out.dist >= 0)
    torch.testing.assert_close(out.dist.sum(-1), torch.ones(n))
    torch.testing.assert_close(out.mean, mean_score(out.dist))


def test_efficientnet_pads_like_tensorflow_at_any_size():
    """TF "same" padding gives ceil(size / stride); padding fixed for 224 would give 114 here."""
    stem = APM(APMConfig(backbone="efficientnet_lite0")).backbone._conv_stem
    assert stem(torch.randn(1, 3, 229, 229)).shape[-2:] == (115, 115)


def test_mean_head_regresses_one_score_from_the_middle_of_the_scale():
    model = APM(APMConfig(backbone="resnet18", head="mean")).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 64))
    assert out.dist_logits is None and out.dist is None
    assert out.mean.shape == (2,)
    assert model.aesthetic_head.out_features == 1
    assert model.aesthetic_head.bias.item() == 5.5


def test_score_helpers_match_numpy():
    dist = torch.tensor([[0.0, 0, 0, 0, 0.5, 0.5, 0, 0, 0, 0], [0.1] * 10, [0, 0, 0, 1.0, 0, 0, 0, 0, 0, 0]])
    scores = np.arange(1, 11)
    means = dist.numpy() @ scores
    stds = np.sqrt(dist.numpy() @ scores**2 - means**2)
    torch.testing.assert_close(mean_score(dist), torch.tensor(means, dtype=torch.float32))
    torch.testing.assert_close(std_score(dist), torch.tensor(stds, dtype=torch.float32))
    assert is_high(dist).tolist() == [True, True, False]  # 5.5, 5.5, 4


@pytest.fixture(scope="module")
def teacher() -> APM:
    return create_apm(APMConfig(backbone="efficientnet_lite0"), init="teacher").eval()


def test_teacher_init_is_the_real_imagenet_classifier(teacher):
    photo = torch.from_numpy(skimage.data.coffee()).permute(2, 0, 1).float() / 255
    photo = TF.resize(photo, [224, 224], antialias=True)
    mean, std = (torch.tensor(v).view(3, 1, 1) for v in input_normalisation("efficientnet_lite0"))
    torch.testing.assert_close(torch.stack([mean, std]).flatten(), torch.tensor([0.498] * 3 + [0.502] * 3),
                               atol=1e-4, rtol=0)
    with torch.no_grad():
        logits = teacher(((photo - mean) / std)[None]).semantic_logits
    assert IMAGENET_CATEGORIES[int(logits.argmax())] == "espresso"
    assert logits.softmax(-1).max() > 0.5


def test_teacher_init_needs_the_teachers_architecture():
    with pytest.raises(ValueError, match="efficientnet_lite0 only, not 'resnet18'"):
        create_apm(APMConfig(backbone="resnet18"), init="teacher")


def test_imagenet_init_loads_backbone_and_classifier(tmp_path):
    """As torchvision's older ImageNet files, without BatchNorm's num_batches_tracked."""
    reference = torchvision.models.resnet18(weights=None).eval()
    state_dict = {k: v for k, v in reference.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state_dict, tmp_path / "resnet18.pth")
    model = create_apm(APMConfig(backbone="resnet18"), init=f"imagenet:{tmp_path / 'resnet18.pth'}").eval()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(images).semantic_logits, reference(images))


def test_imagenet_init_of_another_architecture_names_it(tmp_path):
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), tmp_path / "resnet34.pth")
    with pytest.raises(WeightsMismatchError, match=r"resnet34.pth does not fit backbone 'resnet18'.*unexpec"):
        create_apm(APMConfig(backbone="resnet18"), init=f"imagenet:{tmp_path / 'resnet34.pth'}")
    incomplete = torchvision.models.resnet18(weights=None).state_dict()
    del incomplete["layer2.0.conv1.weight"], incomplete["fc.bias"]
    torch.save(incomplete, tmp_path / "incomplete.pth")
    with pytest.raises(WeightsMismatchError, match=r"1 missing keys \(e.g. layer2.0.conv1.weight\)"):
        create_apm(APMConfig(backbone="resnet18"), init=f"imagenet:{tmp_path / 'incomplete.pth'}")
    with pytest.raises(ValueError, match="unknown init 'imgnet"):
        create_apm(APMConfig(backbone="resnet18"), init="imgnet:x")


def _same_weights(a: APM, b: APM) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_checkpoint_round_trip_is_weights_only(tmp_path, teacher):
    data = checkpoint_bytes(teacher)
    raw = torch.load(io.BytesIO(data), weights_only=True)
    assert raw["config"] == {"backbone": "efficientnet_lite0", "num_classes": 1000, "num_bins": 10,
                             "dropout": 0.2, "head": "distribution"}
    assert _same_weights(load_checkpoint(data), teacher)

    path = str(tmp_path / "ckpt" / "apm.pt")
    model = APM(APMConfig(backbone="resnet18", head="mean"))
    save_checkpoint(model, path)
    assert trained_image_size(path) is None and trained_image_size(data) is None
    assert trained_image_size(checkpoint_bytes(model, image_size=96)) == 96
    other_dropout = APMConfig(backbone="resnet18", head="mean", dropout=0.0)
    assert _same_weights(load_checkpoint(path, other_dropout), model)
    assert _same_weights(create_apm(model.config, init=f"checkpoint:{path}"), model)


def test_checkpoint_of_another_architecture_names_both(tmp_path):
    path = str(tmp_path / "apm.pt")
    save_checkpoint(APM(APMConfig(backbone="resnet18")), path)
    with pytest.raises(CheckpointError, match=r"backbone resnet18 \(head=dist.*but backbone resnet34 "):
        load_checkpoint(path, APMConfig(backbone="resnet34"))
    with pytest.raises(CheckpointError, match="head=distribution.*but backbone resnet18 .head=mean"):
        create_apm(APMConfig(backbone="resnet18", head="mean"), init=f"checkpoint:{path}")


def test_foreign_file_is_not_a_checkpoint(tmp_path):
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="other.pt: not an APM checkpoint"):
        load_checkpoint(str(tmp_path / "other.pt"))


def _with_trained_statistics(model: torch.nn.Module) -> torch.nn.Module:
    """Random batch-norm statistics and affine terms, as training leaves them (not 0 / 1)."""
    for bn in model.modules():
        if isinstance(bn, torch.nn.BatchNorm2d):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            torch.nn.init.uniform_(bn.weight, 0.5, 1.5)
            torch.nn.init.uniform_(bn.bias, -0.2, 0.2)
    return model.eval()


@pytest.mark.parametrize("backbone", ["resnet18", "efficientnet_lite0"])
def test_folding_batch_norm_keeps_the_outputs(backbone):
    # EfficientNet-Lite's same-padding convolutions cannot be traced by torch.fx; hooks find them.
    model = _with_trained_statistics(create_apm(APMConfig(backbone=backbone), "random"))
    layers = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    folded, count = fold_batch_norm(model, torch.rand(1, 3, 64, 64))
    assert count == layers > 0
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == layers  # a copy
    x = torch.rand(3, 3, 96, 96)
    with torch.no_grad():
        expected, got = model(x), folded(x)
    torch.testing.assert_close(got.dist, expected.dist, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(got.semantic_logits, expected.semantic_logits, rtol=1e-4, atol=1e-4)


class _ConvOutputUsedTwice(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.bn(y) + y  # folding would change the skip's value too


def test_folding_refuses_a_model_whose_outputs_would_change():
    model = _with_trained_statistics(_ConvOutputUsedTwice())
    x = torch.rand(2, 3, 16, 16)
    same, count = fold_batch_norm(model, x)
    assert count == 0
    assert isinstance(same.bn, torch.nn.BatchNorm2d)
    with torch.no_grad():
        torch.testing.assert_close(same(x), model(x))
