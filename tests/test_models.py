"""Models: the registry, every toggle value, parameter counts, freezing, pretrained loading.

Toggle tests run SqueezeNet 1.1 and ResNet-18; the deep ResNets are built only for counts and shapes
(eval mode, no backward), which keeps the file well under a minute on two CPU cores.
"""
from __future__ import annotations

import pytest
import torch

import models
from models import MODELS, create_model
from models.blocks import ACTIVATIONS, ATTENTION, DSConv, get_activation, get_attention
from models.resnet import load_pretrained
from models.squeezenet import Fire, SqueezeNet
from study.config import CHOICES, MODEL_NAMES, ConfigError, TrainConfig, UserError

NUM_CLASSES = 10
SQUEEZENETS = ("squeezenet", "squeezenet1_0", "squeezenet1_1")
# torchvision's published parameter counts at 1000 classes, minus the 990 classes we drop (and for the
# CIFAR ResNet stem, 7x7 -> 3x3 in conv1: 9408 -> 1728).
COUNTS_10_CLASSES = {
    "squeezenet1_0": 1_248_424 - 513 * 990,  # 740,554
    "squeezenet1_1": 1_235_496 - 513 * 990,  # 727,626
    "resnet18": 11_689_512 - 513 * 990 - 7680,  # 11,173,962
    "resnet34": 21_797_672 - 513 * 990 - 7680,
    "resnet50": 25_557_032 - 2049 * 990 - 7680,  # 23,520,842
    "resnet101": 44_549_160 - 2049 * 990 - 7680,
    "resnet152": 60_192_808 - 2049 * 990 - 7680,  # 58,156,618
}
PLAIN_SQUEEZENET = {"batch_norm": False}  # torchvision's SqueezeNet: no BN, every toggle off


def config(**values) -> TrainConfig:
    return TrainConfig.from_dict({"dataset": "synthetic", **values})


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def check_trains(model: torch.nn.Module, batch: int = 2) -> None:
    """Forward gives (batch, classes) without NaN; backward reaches every trainable parameter."""
    torch.manual_seed(0)
    model.train()
    out = model(torch.randn(batch, 3, 32, 32))
    assert out.shape == (batch, NUM_CLASSES)
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not no_grad, f"no gradient reaches {no_grad}"


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_model_name_has_a_factory(name):
    assert callable(MODELS.get(name)), f"models.MODELS has no factory for {name!r}"


@pytest.mark.parametrize("name", list(MODELS))
def test_every_factory_has_a_model_name(name):
    assert name in MODEL_NAMES and TrainConfig(model=name).model == name


def test_registry_keys_are_the_schema_choices():
    assert tuple(MODELS) == MODEL_NAMES == CHOICES["model"]  # also in order: --help and errors list them
    assert tuple(ACTIVATIONS) == CHOICES["activation"]
    assert tuple(ATTENTION) == CHOICES["attention"]


@pytest.mark.parametrize("name", SQUEEZENETS + ("resnet18",))
def test_model_trains(name):
    extra = {} if name.startswith("resnet") else PLAIN_SQUEEZENET
    check_trains(create_model(config(model=name, **extra), NUM_CLASSES))


@pytest.mark.parametrize("name", ["resnet34", "resnet50", "resnet101", "resnet152"])
def test_deep_resnet_shape(name):
    model = create_model(config(model=name), NUM_CLASSES).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 32, 32))
    assert out.shape == (1, NUM_CLASSES) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", list(MODELS))
def test_param_count(name):
    key = "squeezenet1_1" if name == "squeezenet" else name
    extra = PLAIN_SQUEEZENET if name in SQUEEZENETS else {}
    assert n_params(create_model(config(model=name, **extra), NUM_CLASSES)) == COUNTS_10_CLASSES[key]


def test_required_squeezenet_counts_and_resnet18_size():
    assert COUNTS_10_CLASSES["squeezenet1_1"] == 727_626
    assert COUNTS_10_CLASSES["squeezenet1_0"] == 740_554
    resnet18 = n_params(create_model(config(model="resnet18"), NUM_CLASSES))
    assert abs(resnet18 - 11.17e6) / 11.17e6 < 0.01


def test_imagenet_stem_matches_torchvision_at_1000_classes():
    """With torchvision's stem and 1000 classes the counts are torchvision's own."""
    assert n_params(create_model(config(model="squeezenet1_1", stem="imagenet", **PLAIN_SQUEEZENET),
                                 1000)) == 1_235_496
    assert n_params(create_model(config(model="resnet18", stem="imagenet"), 1000)) == 11_689_512


SQUEEZENET_TOGGLES = (
    [("attention", v) for v in CHOICES["attention"]]
    + [("residual", v) for v in CHOICES["residual"]]
    + [("activation", v) for v in CHOICES["activation"]]
    + [("init", v) for v in CHOICES["init"]]
    + [("stem", v) for v in CHOICES["stem"]]
    + [("dsconv", True), ("dsconv", False), ("batch_norm", True), ("batch_norm", False),
       ("width", 0.5), ("width", 1.5), ("dropout", 0.0)]
)


@pytest.mark.parametrize("version", ["squeezenet1_0", "squeezenet1_1"])
@pytest.mark.parametrize("knob,value", SQUEEZENET_TOGGLES)
def test_squeezenet_toggle(version, knob, value):
    check_trains(create_model(config(model=version, **{knob: value}), NUM_CLASSES))


RESNET_TOGGLES = (
    [("attention", v) for v in CHOICES["attention"]]
    + [("activation", v) for v in CHOICES["activation"]]
    + [("init", v) for v in CHOICES["init"]]
    + [("stem", v) for v in CHOICES["stem"]]
    + [("dropout", 0.0), ("dropout", 0.3)]
)


@pytest.mark.parametrize("knob,value", RESNET_TOGGLES)
def test_resnet_toggle(knob, value):
    check_trains(create_model(config(model="resnet18", **{knob: value}), NUM_CLASSES))


def test_bottleneck_with_attention_trains():
    check_trains(create_model(config(model="resnet50", attention="channel"), NUM_CLASSES))


def test_squeezenet_maps_shrink_32_16_8_4_with_cifar_stem():
    model = create_model(config(model="squeezenet"), NUM_CLASSES)
    sizes = []
    model.features.register_forward_hook(lambda m, i, out: sizes.append(out.shape[-1]))
    for pool in (m for m in model.features if isinstance(m, torch.nn.MaxPool2d)):
        pool.register_forward_hook(lambda m, i, out: sizes.append(out.shape[-1]))
    model(torch.randn(1, 3, 32, 32))
    assert sizes == [16, 8, 4, 4]


@pytest.mark.parametrize("version", ["1_0", "1_1"])
def test_bypass_placement(version):
    """simple: identity bypass on fire3/5/7/9 (in == out); complex adds 1x1 convs on fire2/4/6/8."""
    def bypasses(residual):
        net = SqueezeNet(version, NUM_CLASSES, residual=residual)
        blocks = [m for m in net.features if isinstance(m, Fire)]
        return {i + 2: type(b.bypass).__name__ for i, b in enumerate(blocks) if b.bypass is not None}

    assert bypasses("none") == {}
    assert bypasses("simple") == {3: "Identity", 5: "Identity", 7: "Identity", 9: "Identity"}
    assert bypasses("complex") == {2: "Sequential", 3: "Identity", 4: "Sequential", 5: "Identity",
                                   6: "Sequential", 7: "Identity", 8: "Sequential", 9: "Identity"}


@pytest.mark.parametrize("channels,kernel,hidden", [(64, 3, 8), (128, 5, 8), (512, 5, 32)])
def test_attention_sizes_follow_the_papers(channels, kernel, hidden):
    """ECA: k = |(log2 C + 1) / 2| rounded up to odd; SE: C / 16 hidden units, at least 8."""
    assert get_attention("eca", channels).conv.kernel_size == (kernel,)
    assert get_attention("channel", channels).fc1.out_channels == hidden


def test_dsconv_replaces_expand3x3():
    fire = SqueezeNet("1_1", NUM_CLASSES, dsconv=True).features[2]
    assert isinstance(fire.expand3x3, DSConv)
    assert fire.expand3x3.depthwise[0].groups == fire.squeeze[0].out_channels


def test_width_scales_every_channel():
    half = SqueezeNet("1_1", NUM_CLASSES, width=0.5)
    assert half.features[0][0].out_channels == 32
    assert half.classifier[1].in_channels == 256


def test_default_init_is_torchvision():
    model = SqueezeNet("1_1", NUM_CLASSES)
    final = model.classifier[1]
    assert abs(final.weight.std().item() - 0.01) < 0.003 and not final.bias.any()
    assert all(not m.bias.any() for m in model.modules() if isinstance(m, torch.nn.Conv2d))


@pytest.mark.parametrize("name,head", [("resnet18", "fc."), ("squeezenet", "classifier.")])
def test_freeze_backbone_leaves_only_the_classifier(name, head):
    model = create_model(config(model=name, freeze="backbone", init_from="x"), NUM_CLASSES)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(n.startswith(head) for n in trainable)
    assert len(trainable) == 2  # weight and bias of the classifier
    check_trains(model)


def test_bad_names_list_the_valid_ones():
    with pytest.raises(ConfigError, match="relu, silu, gelu, hardswish, mish"):
        get_activation("swish")
    with pytest.raises(ConfigError, match="none, simple, channel, eca, cbam"):
        get_attention("se", 64)
    with pytest.raises(ConfigError, match="1_0, 1_1"):
        SqueezeNet("1_2")
    cfg = config()
    object.__setattr__(cfg, "model", "vgg16")  # the schema rejects it first; the registry must too
    with pytest.raises(ConfigError, match="squeezenet, squeezenet1_0, .*resnet152"):
        create_model(cfg, NUM_CLASSES)


@pytest.mark.parametrize("knob,value", [("residual", "simple"), ("dsconv", True), ("width", 0.5),
                                        ("batch_norm", False)])
def test_squeezenet_only_knobs_rejected_on_resnet(knob, value):
    with pytest.raises(ConfigError, match="SqueezeNet-only"):
        create_model(config(model="resnet18", **{knob: value}), NUM_CLASSES)


@pytest.fixture
def imagenet_resnet18(tmp_path):
    """A torchvision-named ResNet-18 ImageNet state dict (fresh weights) saved to a file."""
    torch.manual_seed(1)
    source = create_model(config(model="resnet18", stem="imagenet"), 1000)
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)
    return source.state_dict(), path


@pytest.mark.parametrize("stem,skipped", [("cifar", ["conv1.weight", "fc.bias", "fc.weight"]),
                                          ("imagenet", ["fc.bias", "fc.weight"])])
def test_load_pretrained_from_file(imagenet_resnet18, stem, skipped):
    state, path = imagenet_resnet18
    model = create_model(config(model="resnet18", stem=stem), NUM_CLASSES)
    result = load_pretrained(model, path)
    assert result.skipped == skipped and result.left_at_init == []
    loaded = model.state_dict()
    for key in state:
        if key not in skipped:
            assert torch.equal(loaded[key], state[key]), key
    assert not torch.equal(loaded["fc.weight"][:NUM_CLASSES], state["fc.weight"][:NUM_CLASSES])


def test_load_pretrained_leaves_attention_at_init(imagenet_resnet18):
    state, _ = imagenet_resnet18
    model = create_model(config(model="resnet18", attention="channel"), NUM_CLASSES)
    result = load_pretrained(model, state)
    assert result.left_at_init and all(".attention." in k for k in result.left_at_init)


def test_load_pretrained_rejects_another_depth(imagenet_resnet18):
    state, _ = imagenet_resnet18
    with pytest.raises(ValueError, match="lack"):
        load_pretrained(create_model(config(model="resnet34"), NUM_CLASSES), state)


def test_pretrained_config_fetches_and_freezes(imagenet_resnet18, monkeypatch):
    state, _ = imagenet_resnet18
    fetched = []
    monkeypatch.setattr(models.resnet, "fetch_imagenet_weights",
                        lambda name: fetched.append(name) or state)
    model = create_model(config(model="resnet18", pretrained=True, stem="imagenet", freeze="backbone"),
                         NUM_CLASSES)
    assert fetched == ["resnet18"]
    assert torch.equal(model.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])
    assert torch.equal(model.conv1.weight, state["conv1.weight"])
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["fc.weight", "fc.bias"]
    frozen = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert frozen and all(isinstance(m, models.FrozenBatchNorm2d) for m in frozen)
    assert not any(m.training for m in model.train().modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_fresh_stem_is_a_new_conv1_that_trains_with_bn1_under_a_frozen_backbone(imagenet_resnet18,
                                                                                 monkeypatch):
    state, _ = imagenet_resnet18
    monkeypatch.setattr(models.resnet, "fetch_imagenet_weights", lambda name: state)
    model = create_model(config(model="resnet18", pretrained=True, fresh_stem=True, freeze="backbone"),
                         NUM_CLASSES)
    assert model.conv1.weight.shape[-1] == 3 and torch.equal(model.bn1.weight, state["bn1.weight"])
    assert [n for n, p in model.named_parameters() if p.requires_grad] == \
        ["conv1.weight", "bn1.weight", "bn1.bias", "fc.weight", "fc.bias"]
    assert type(model.bn1) is torch.nn.BatchNorm2d and model.train().bn1.training
    assert isinstance(model.layer1[0].bn1, models.FrozenBatchNorm2d)  # "bn1." matches the stem only


def test_imagenet_weights_offline_are_one_line_naming_the_cache_file(monkeypatch, tmp_path):
    from urllib.error import URLError

    def offline(url, dst, *args, **kwargs):
        raise URLError("[Errno -2] Name or service not known")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(UserError) as err:
        create_model(config(model="resnet152", pretrained=True, stem="imagenet"), NUM_CLASSES)
    message = str(err.value)
    expected = tmp_path / "hub" / "checkpoints" / "resnet152-394f9c45.pth"
    assert "\n" not in message and str(expected) in message and "Name or service" in message


def test_dropout_default_is_the_familys_and_explicit_values_win():
    def dropouts(model):
        return [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)]

    assert dropouts(create_model(config(model="resnet18"), NUM_CLASSES)) == []
    assert dropouts(create_model(config(model="resnet18", dropout=0.3), NUM_CLASSES)) == [0.3]
    assert dropouts(create_model(config(model="squeezenet"), NUM_CLASSES)) == [0.5]
    assert dropouts(create_model(config(model="squeezenet", dropout=0.0), NUM_CLASSES)) == [0.0]
