"""Fine-tuning never raises the lr; a frozen backbone stays bit-identical through training (weights and
BatchNorm statistics), so "train the classifier only" means exactly that."""
import pytest
import torch

import models
from models import create_model
from models.resnet import BasicBlock, ResNet
from study.config import TrainConfig
from training.checkpoint import load_checkpoint
from training.loop import fit
from training.optim import build_optimizer, build_scheduler

TINY = dict(dataset="synthetic", subset=512, batch_size=32, eval_batch_size=256, width=0.25,
            lr=0.05, measure_latency=False, device="cpu")


def run(cfg: TrainConfig, checkpoint_dir=None) -> tuple[list[dict], dict]:
    rows = []
    summary = fit(cfg, lambda metrics, path: rows.append(dict(metrics)), checkpoint_dir=checkpoint_dir)
    return rows, summary


def schedule_lrs(cfg: TrainConfig, steps_per_epoch: int) -> tuple[list[float], float]:
    """(the lr of every main-phase step, the lr the schedule ended at), replayed on a dummy optimiser."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=cfg.lr)
    scheduler = build_scheduler(cfg, optimizer, steps_per_epoch)
    lrs = []
    for _ in range(cfg.epochs * steps_per_epoch):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs, optimizer.param_groups[0]["lr"]


def test_finetuning_after_onecycle_runs_at_the_lr_the_schedule_ended_at():
    cfg = TrainConfig(**TINY, scheduler="onecycle", epochs=2, finetune_epochs=1)
    rows, summary = run(cfg)
    assert [r["train_phase"] for r in rows] == ["main", "main", "finetune"]
    lrs, ended_at = schedule_lrs(cfg, summary["train_images"] // cfg.batch_size)
    assert rows[2]["lr"] == lrs[-1]  # the last main step's lr (not the one OneCycle stepped on to)
    assert ended_at > lrs[-1]
    assert rows[2]["lr"] < 1e-3 * cfg.lr * cfg.finetune_lr_factor  # the old rule jumped up to lr x 0.1


@pytest.mark.parametrize("extra, expected", [({"finetune_lr": 3e-3}, 3e-3),  # explicit: as given
                                             ({}, 0.05 * 0.1)])  # constant schedule: lr x factor
def test_explicit_finetune_lr_is_used_as_given_and_a_constant_schedule_keeps_the_factor(extra, expected):
    rows, _ = run(TrainConfig(**TINY, scheduler="none", epochs=1, finetune_epochs=1, **extra))
    assert rows[-1]["train_phase"] == "finetune" and rows[-1]["lr"] == pytest.approx(expected)


def test_a_trial_resumed_in_its_finetuning_phase_keeps_that_lr(tmp_path):
    cfg = TrainConfig(**TINY, scheduler="onecycle", epochs=1, finetune_epochs=2)
    full, _ = run(cfg, str(tmp_path / "full"))

    class Stop(Exception):
        pass

    def stop_in_finetuning(metrics, path):
        if metrics["epoch"] == 2:
            raise Stop
    with pytest.raises(Stop):
        fit(cfg, stop_in_finetuning, checkpoint_dir=str(tmp_path / "cut"))
    resumed = []
    fit(cfg, lambda m, p: resumed.append(dict(m)), resume_from=str(tmp_path / "cut"),
        checkpoint_dir=str(tmp_path / "cut"))
    keys = ("lr", "train_phase", "train_loss", "val_acc")
    assert [{k: r[k] for k in keys} for r in resumed] == [{k: r[k] for k in keys} for r in full[2:]]


def imagenet_state(seed: int = 1) -> dict[str, torch.Tensor]:
    """A torchvision-format ResNet-18 ImageNet state dict from our own class, with every BatchNorm's
    affine weights and running statistics moved away from their init (so "unchanged" means something)."""
    torch.manual_seed(seed)
    source = ResNet(BasicBlock, (2, 2, 2, 2), 1000, stem="imagenet")
    for m in source.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0.0, 0.1)
            m.running_mean.normal_(0.0, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            m.num_batches_tracked.fill_(1234)
    return {k: v.clone() for k, v in source.state_dict().items()}


FROZEN = dict(dataset="synthetic", subset=256, batch_size=32, eval_batch_size=256, epochs=1,
              model="resnet18", stem="imagenet", pretrained=True, freeze="backbone", optimizer="adam",
              lr=1e-2, scheduler="none", measure_latency=False, device="cpu")


def test_a_frozen_backbone_is_bit_identical_after_training_and_only_fc_learns(monkeypatch, tmp_path):
    state = imagenet_state()
    monkeypatch.setattr(models.resnet, "fetch_imagenet_weights", lambda name: state)
    cfg = TrainConfig(**FROZEN)
    torch.manual_seed(cfg.seed)  # the trial seeds the same way right before it builds its model
    initial_fc = create_model(cfg, 10).fc.weight.detach().clone()
    rows, summary = run(cfg, str(tmp_path))
    assert summary["status"] == "finished" and rows[0]["train_loss"] > 0
    trained = load_checkpoint(tmp_path)["model"]
    assert set(trained) == set(state)  # FrozenBatchNorm2d keeps BatchNorm2d's keys
    changed = [k for k in state if not k.startswith("fc.") and not torch.equal(trained[k], state[k])]
    assert not changed, f"the frozen backbone moved: {changed[:5]}"
    assert any(k.endswith("num_batches_tracked") for k in state)
    assert not torch.equal(trained["fc.weight"], initial_fc)


def test_the_optimiser_holds_only_the_trainable_parameters(monkeypatch):
    monkeypatch.setattr(models.resnet, "fetch_imagenet_weights", lambda name: imagenet_state())
    model = create_model(TrainConfig(**FROZEN), 10)
    optimizer = build_optimizer(TrainConfig(**FROZEN), model, torch.device("cpu"))
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert held == {id(model.fc.weight), id(model.fc.bias)}
