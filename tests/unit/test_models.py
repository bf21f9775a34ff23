"""medvec.models: registry, ResNet stems, FL-RA blocks, checkpoint import, model files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torchvision
from safetensors.torch import save_file
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from medvec.errors import ModelError
from medvec.models import (
    ModelRegistry,
    ModelSpec,
    build_model,
    get_model,
    list_models,
    load_model_file,
    load_torchvision_checkpoint,
    read_model_provenance,
    read_model_spec,
    register_model,
    save_model_file,
)
from medvec.models.attention import MultiHeadSelfAttention2d
from medvec.models.flra import FLRABasicBlock, FLRABottleneck

ARCHS = ["resnet10", "resnet18", "resnet50", "flra_resnet18", "flra_resnet50"]


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _set_alpha(model: nn.Module, value: float) -> None:
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(".alpha"):
                param.fill_(value)


def _wake_attention(model: nn.Module) -> None:
    """Non-zero attention output projections (a new FL-RA block starts with them at zero),
    and open residual branches (a new bottleneck starts with its last BatchNorm at zero,
    which passes no gradient back into the branch on the first step)."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("attn.proj.weight"):
                param.normal_(std=0.1)
        for module in model.modules():
            if isinstance(module, Bottleneck):
                module.bn3.weight.fill_(1.0)


def _conv(model: nn.Module, name: str) -> nn.Conv2d:
    conv = model.get_submodule(name)
    assert isinstance(conv, nn.Conv2d)
    return conv


def _randomise_bn(model: nn.Module) -> None:
    """Non-trivial running statistics, so eval-mode comparisons exercise them."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                assert module.running_mean is not None and module.running_var is not None
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)


# --- registry -------------------------------------------------------------------------


def test_list_models_names_every_architecture() -> None:
    assert set(ARCHS) <= set(list_models())


def test_duplicate_registration_rejected() -> None:
    registry = ModelRegistry()

    @registry.register("tiny")
    def tiny(*, num_classes: int, in_channels: int = 3, image_size: int = 28) -> nn.Module:
        return nn.Linear(in_channels, num_classes)

    with pytest.raises(ModelError, match="already registered"):
        registry.register("tiny")(tiny)
    with pytest.raises(ModelError, match="already registered"):
        register_model("resnet18")(tiny)
    assert registry.names() == ["tiny"]
    assert isinstance(registry.get("tiny", num_classes=2), nn.Linear)


def test_unknown_name_lists_known_names() -> None:
    with pytest.raises(ModelError) as info:
        get_model("resnet1000", num_classes=2)
    assert "resnet1000" in info.value.message
    assert "flra_resnet50" in (info.value.hint or "")
    assert "resnet18" in info.value.detail["known"]


@pytest.mark.parametrize("cfg", [{"num_classes": 0}, {"num_classes": 2, "depth": 3}, {}])
def test_invalid_config_is_model_error(cfg: dict[str, int]) -> None:
    with pytest.raises(ModelError, match="invalid config"):
        get_model("resnet18", **cfg)


def test_spec_is_frozen_and_builds() -> None:
    spec = ModelSpec(arch="resnet18", num_classes=5, in_channels=1)
    with pytest.raises(ValueError):
        spec.num_classes = 3  # type: ignore[misc]
    model = build_model(spec)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 5)


# --- ResNet stems and shapes -------------------------------------------------------------


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
@pytest.mark.parametrize("in_channels", [1, 3])
def test_resnet_output_shapes(arch: str, in_channels: int) -> None:
    model = get_model(arch, num_classes=7, in_channels=in_channels, image_size=28).eval()
    with torch.no_grad():
        out = model(torch.randn(2, in_channels, 28, 28))
    assert out.shape == (2, 7)
    assert _conv(model, "conv1").in_channels == in_channels


def test_stem_depends_on_image_size() -> None:
    small = get_model("resnet18", num_classes=2, image_size=28)
    large = get_model("resnet18", num_classes=2, image_size=224)
    assert _conv(small, "conv1").kernel_size == (3, 3) and _conv(small, "conv1").stride == (1, 1)
    assert isinstance(small.maxpool, nn.Identity)
    assert _conv(large, "conv1").kernel_size == (7, 7) and _conv(large, "conv1").stride == (2, 2)
    assert isinstance(large.maxpool, nn.MaxPool2d)


def test_keys_are_torchvision_keys() -> None:
    ours = get_model("resnet50", num_classes=1000, image_size=224).state_dict()
    theirs = torchvision.models.resnet50().state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}
    flra = get_model("flra_resnet50", num_classes=1000, image_size=224).state_dict()
    assert set(theirs) < set(flra)
    assert all(".attn." in k or k.endswith((".alpha", ".beta")) for k in set(flra) - set(theirs))


# --- FL-RA ----------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["flra_resnet18", "flra_resnet50"])
@pytest.mark.parametrize("size", [28, 224])
def test_flra_forward_backward(arch: str, size: int) -> None:
    model = get_model(arch, num_classes=3, image_size=size)
    _wake_attention(model)
    out = model(torch.randn(2, 3, size, size))
    assert out.shape == (2, 3)
    out.square().mean().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
    attn_grads = [p.grad for n, p in model.named_parameters() if n.endswith("attn.q.weight")]
    assert attn_grads and all(g is not None and g.abs().sum() > 0 for g in attn_grads)


def test_attention_starts_silent_with_a_zero_projection() -> None:
    model = get_model("flra_resnet18", num_classes=3)
    named = dict(model.named_parameters())
    projections = [p for n, p in named.items() if n.endswith("attn.proj.weight")]
    alphas = [p for n, p in named.items() if n.endswith(".alpha")]
    assert len(projections) == len(alphas) == 8
    assert all(p.abs().sum() == 0 for p in projections) and all(a.item() == 1 for a in alphas)


@pytest.mark.parametrize(
    ("flra_cls", "plain_cls", "inplanes", "planes", "stride"),
    [
        (FLRABottleneck, torchvision.models.resnet.Bottleneck, 64, 16, 1),
        (FLRABottleneck, torchvision.models.resnet.Bottleneck, 32, 16, 2),
        (FLRABasicBlock, torchvision.models.resnet.BasicBlock, 16, 32, 2),
    ],
)
def test_new_block_is_the_plain_block(
    flra_cls: type[nn.Module], plain_cls: type[nn.Module], inplanes: int, planes: int, stride: int
) -> None:
    expansion = plain_cls.expansion  # type: ignore[attr-defined]
    downsample = None
    if stride != 1 or inplanes != planes * expansion:
        downsample = nn.Sequential(
            nn.Conv2d(inplanes, planes * expansion, 1, stride=stride, bias=False),
            nn.BatchNorm2d(planes * expansion),
        )
    plain = plain_cls(inplanes, planes, stride, downsample).eval()
    _randomise_bn(plain)
    fused = flra_cls(inplanes, planes, stride, downsample).eval()
    missing, unexpected = fused.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and all("attn" in k or k in ("alpha", "beta") for k in missing)
    x = torch.randn(2, inplanes, 9, 9)  # odd size: the strided grid must still match
    with torch.no_grad():
        expected = plain(x)
        assert torch.equal(fused(x), expected)
        fused.get_parameter("attn.proj.weight").normal_()
        assert not torch.allclose(fused(x), expected)
    assert expected.shape[-1] == (5 if stride == 2 else 9)


def test_flra_model_with_resnet_weights_equals_resnet() -> None:
    plain = get_model("resnet18", num_classes=4, in_channels=1).eval()
    _randomise_bn(plain)
    flra = get_model("flra_resnet18", num_classes=4, in_channels=1).eval()
    flra.load_state_dict(plain.state_dict(), strict=False)
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        expected = plain(x)
        assert torch.equal(flra(x), expected)
        _wake_attention(flra)
        assert not torch.allclose(flra(x), expected)


def test_attention_shapes_heads_and_kv_pooling() -> None:
    attn = MultiHeadSelfAttention2d(8, 16, stride=2, heads=4)
    assert attn(torch.randn(2, 8, 7, 7)).shape == (2, 16, 4, 4)
    with pytest.raises(ModelError, match="must divide"):
        MultiHeadSelfAttention2d(8, 18, heads=4)
    pooled = MultiHeadSelfAttention2d(8, 8, heads=2, kv_stride=2)
    unpooled = MultiHeadSelfAttention2d(8, 8, heads=2, kv_stride=1)
    unpooled.load_state_dict(pooled.state_dict())
    with torch.no_grad():
        tiny = torch.randn(1, 8, 6, 6)  # 6 // 2 < min_kv_side: pooling skipped
        assert torch.equal(pooled(tiny), unpooled(tiny))
        large = torch.randn(1, 8, 16, 16)
        assert not torch.allclose(pooled(large), unpooled(large))


# --- torchvision checkpoints ------------------------------------------------------------


def _torchvision_checkpoint(
    tmp_path_factory: pytest.TempPathFactory, arch: str
) -> tuple[nn.Module, Path]:
    torch.manual_seed(1)
    reference = getattr(torchvision.models, arch)().eval()
    _randomise_bn(reference)
    path = tmp_path_factory.mktemp(arch) / f"{arch}.pth"
    torch.save(reference.state_dict(), path)
    return reference, path


@pytest.fixture(scope="module")
def tv_resnet18(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, Path]:
    return _torchvision_checkpoint(tmp_path_factory, "resnet18")


@pytest.fixture(scope="module")
def tv_resnet50(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, Path]:
    return _torchvision_checkpoint(tmp_path_factory, "resnet50")


@pytest.mark.parametrize("depth", [18, 50])
@pytest.mark.parametrize("prefix", ["", "flra_"])
def test_checkpoint_at_224_reproduces_torchvision(
    request: pytest.FixtureRequest, depth: int, prefix: str
) -> None:
    reference, path = request.getfixturevalue(f"tv_resnet{depth}")
    model = get_model(f"{prefix}resnet{depth}", num_classes=1000, image_size=224).eval()
    _wake_attention(model)  # the import must silence the attention for the pretrained block
    report = load_torchvision_checkpoint(model, path)
    assert not report.skipped and not report.adapted and not report.unexpected
    assert len(report.loaded) == len(reference.state_dict())
    if prefix:
        assert report.missing and all("FL-RA" in why for why in report.missing.values())
    else:
        assert not report.missing
    x = torch.randn(1, 3, 64, 64)  # the 224 stem on a smaller crop keeps the test fast
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))


def test_checkpoint_fc_skipped_when_classes_differ(tv_resnet18: tuple[nn.Module, Path]) -> None:
    reference, path = tv_resnet18
    model = get_model("flra_resnet18", num_classes=2, image_size=224)
    report = load_torchvision_checkpoint(model, path)
    assert set(report.skipped) == {"fc.weight", "fc.bias"}
    assert "num_classes differs" in report.skipped["fc.weight"]
    ref_state = reference.state_dict()
    for key, value in model.state_dict().items():
        if key in ref_state and not key.startswith("fc."):
            assert torch.equal(value, ref_state[key]), key


def test_checkpoint_at_28_skips_the_stem(tv_resnet50: tuple[nn.Module, Path]) -> None:
    reference, path = tv_resnet50
    model = get_model("flra_resnet50", num_classes=3, image_size=28)
    report = load_torchvision_checkpoint(model, path)
    assert set(report.skipped) == {"conv1.weight", "fc.weight", "fc.bias"}
    assert "stem differs" in report.skipped["conv1.weight"]
    conv3 = "layer4.2.conv3.weight"
    assert torch.equal(model.get_parameter(conv3), reference.get_parameter(conv3))
    assert model.get_parameter("conv1.weight").shape == (64, 3, 3, 3)


def test_checkpoint_grey_model_sums_rgb_kernel(tv_resnet18: tuple[nn.Module, Path]) -> None:
    reference, path = tv_resnet18
    model = get_model("resnet18", num_classes=1000, in_channels=1, image_size=224).eval()
    report = load_torchvision_checkpoint(model, path)
    assert "summed over RGB" in report.adapted["conv1.weight"]
    grey = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(grey), reference(grey.repeat(1, 3, 1, 1)))


def test_checkpoint_wrapped_and_safetensors(
    tv_resnet18: tuple[nn.Module, Path], tmp_path: Path
) -> None:
    reference, _ = tv_resnet18
    state = reference.state_dict()
    wrapped = tmp_path / "wrapped.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, wrapped)
    as_safetensors = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(as_safetensors))
    for path in (wrapped, as_safetensors):
        model = get_model("resnet18", num_classes=1000, image_size=224)
        report = load_torchvision_checkpoint(model, path)
        assert len(report.loaded) == len(state) and not report.skipped, path
        assert torch.equal(model.get_parameter("fc.weight"), reference.get_parameter("fc.weight"))


def test_checkpoint_unreadable_or_foreign(tmp_path: Path) -> None:
    model = get_model("resnet18", num_classes=2)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="cannot read"):
        load_torchvision_checkpoint(model, garbage)
    with pytest.raises(ModelError, match="does not exist"):
        load_torchvision_checkpoint(model, tmp_path / "missing.pth")
    foreign = tmp_path / "foreign.pth"
    torch.save({"encoder.weight": torch.zeros(3)}, foreign)
    with pytest.raises(ModelError, match="no key"):
        load_torchvision_checkpoint(model, foreign)


# --- model files ----------------------------------------------------------------------------


def test_model_file_round_trip_is_bit_exact(tmp_path: Path) -> None:
    spec = ModelSpec(arch="flra_resnet18", num_classes=3, in_channels=1, image_size=28)
    model = build_model(spec)
    _set_alpha(model, 0.25)
    model(torch.randn(4, 1, 28, 28))  # train mode: running stats and counters move
    path = save_model_file(tmp_path / "base.safetensors", model, spec, {"name": "organ", "gen": 1})
    assert [p.name for p in tmp_path.iterdir()] == ["base.safetensors"]
    assert read_model_spec(path) == spec
    assert read_model_provenance(path) == {"gen": 1, "name": "organ"}
    loaded, loaded_spec = load_model_file(path)
    assert loaded_spec == spec
    original, restored = model.state_dict(), loaded.state_dict()
    assert list(restored) == list(original)
    for key, value in original.items():
        assert restored[key].dtype == value.dtype and torch.equal(restored[key], value), key
    assert original["bn1.num_batches_tracked"].item() == 1
    assert all(p.requires_grad for p in loaded.parameters())
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(loaded.eval()(x), model.eval()(x))


def test_save_state_dict_and_reject_wrong_spec(tmp_path: Path) -> None:
    spec = ModelSpec(arch="resnet18", num_classes=2)
    state = build_model(spec).state_dict()
    path = save_model_file(tmp_path / "sub" / "m.safetensors", state, spec)
    assert read_model_spec(path) == spec and read_model_provenance(path) == {}
    with pytest.raises(ModelError, match="does not match"):
        save_model_file(
            tmp_path / "bad.safetensors", state, spec.model_copy(update={"num_classes": 5})
        )
    with pytest.raises(ModelError, match="does not match"):
        save_model_file(
            tmp_path / "bad.safetensors", state, spec.model_copy(update={"arch": "flra_resnet18"})
        )
    assert not (tmp_path / "bad.safetensors").exists()


def test_not_a_model_file(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 64)
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    vector = tmp_path / "vector.safetensors"
    save_file({"w": torch.zeros(2)}, str(vector), metadata={"medvec.format": "vector"})
    no_spec = tmp_path / "no_spec.safetensors"
    save_file({"w": torch.zeros(2)}, str(no_spec), metadata={"medvec.format": "model"})
    with pytest.raises(ModelError, match="not a safetensors file"):
        read_model_spec(garbage)
    with pytest.raises(ModelError, match="not a MedVec model file"):
        load_model_file(plain)
    with pytest.raises(ModelError) as info:
        read_model_spec(vector)
    assert "load_vector" in (info.value.hint or "")
    with pytest.raises(ModelError, match="no valid medvec.spec"):
        load_model_file(no_spec)
    with pytest.raises(ModelError, match="does not exist"):
        read_model_spec(tmp_path / "missing.safetensors")


def test_model_file_with_foreign_tensors_is_rejected(tmp_path: Path) -> None:
    spec = ModelSpec(arch="resnet18", num_classes=2)
    path = tmp_path / "m.safetensors"
    save_file(
        {"w": torch.zeros(2)},
        str(path),
        metadata={
            "medvec.format": "model",
            "medvec.spec": spec.model_dump_json(),
        },
    )
    with pytest.raises(ModelError, match="does not match resnet18"):
        load_model_file(path)


@pytest.mark.parametrize("arch", ["resnet50", "flra_resnet50"])
def test_bottleneck_residual_branches_start_at_zero(arch: str) -> None:
    """Each bottleneck starts as the identity (its last BatchNorm scale is zero); ResNet-18
    keeps torchvision's default (ones)."""
    spec: dict[str, Any] = {"num_classes": 2, "in_channels": 1, "image_size": 28}
    bottlenecks = [m for m in get_model(arch, **spec).modules() if isinstance(m, Bottleneck)]
    assert len(bottlenecks) == 16
    assert all(torch.count_nonzero(m.bn3.weight) == 0 for m in bottlenecks)
    basic = [m for m in get_model("resnet18", **spec).modules() if isinstance(m, BasicBlock)]
    assert all(torch.equal(m.bn2.weight, torch.ones_like(m.bn2.weight)) for m in basic)
