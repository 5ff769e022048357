"""The training loop on a tiny model, its schedule, checkpoints and the command line."""

import json
import math

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from vit_lib import SimpleViT
from vit_lib.train import main as train_cli
from vit_lib.training import (
    TrainConfig,
    evaluate,
    load_checkpoint,
    param_groups,
    save_checkpoint,
    train,
    warmup_cosine,
)


def tiny_model():
    return SimpleViT(
        image_size=8,
        patch_size=4,
        num_classes=2,
        dim=16,
        depth=1,
        heads=2,
        mlp_dim=32,
        channels=1,
        dim_head=8,
    )


def easy_task(n=64, seed=0):
    """A bright top edge vs a bright bottom edge: learnable in a few steps. (The edges cover half of a
    4x4 patch: a uniformly bright patch would be invisible after the patch embedding's LayerNorm.)"""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (n,), generator=g)
    images = torch.randn(n, 1, 8, 8, generator=g) * 0.1
    images[labels == 0, :, :2] += 1
    images[labels == 1, :, 6:] += 1
    return TensorDataset(images, labels)


def loaders(seed=0):
    data = easy_task()
    return DataLoader(
        data, batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(seed)
    ), DataLoader(data, batch_size=64)


def test_warmup_then_cosine_to_zero():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = warmup_cosine(optimizer, warmup_steps=4, total_steps=12)
    lrs = []
    for _ in range(12):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert lrs[4] == pytest.approx(1.0) and lrs[8] == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert all(a >= b for a, b in zip(lrs[3:], lrs[4:]))
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)


def test_weight_decay_skips_biases_and_norms():
    decay, no_decay = param_groups(tiny_model(), 0.05)
    assert all(p.ndim == 2 for p in decay["params"]) and all(p.ndim == 1 for p in no_decay["params"])
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0


def test_loop_learns_a_tiny_task_and_records_history():
    train_loader, test_loader = loaders()
    model = tiny_model()
    _, accuracy_before = evaluate(model, test_loader, torch.device("cpu"))
    history = train(model, train_loader, test_loader, TrainConfig(epochs=6, lr=3e-3, progress=False))
    assert len(history.train_loss) == len(history.test_accuracy) == len(history.lr) == 6
    assert history.train_loss[-1] < history.train_loss[0]
    assert history.test_accuracy[-1] == 1.0 and accuracy_before < 1.0
    assert history.lr[-1] == pytest.approx(0.0, abs=1e-9)


def test_training_is_deterministic_on_cpu():
    def run():
        torch.manual_seed(0)
        model = tiny_model()
        train_loader, test_loader = loaders()
        history = train(model, train_loader, test_loader, TrainConfig(epochs=2, progress=False))
        return history.train_loss, model.state_dict()

    (loss_a, state_a), (loss_b, state_b) = run(), run()
    assert loss_a == loss_b
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)


def test_checkpoint_round_trip(tmp_path):
    train_loader, test_loader = loaders()
    model = tiny_model()
    train(model, train_loader, None, TrainConfig(epochs=1, progress=False))
    optimizer = torch.optim.AdamW(model.parameters())
    path = tmp_path / "model.pt"
    save_checkpoint(path, model, optimizer, epochs=1, dataset="easy")
    restored = tiny_model()
    extra = load_checkpoint(path, restored, torch.optim.AdamW(restored.parameters()))
    assert extra == {"epochs": 1, "dataset": "easy"}
    images = next(iter(test_loader))[0]
    assert torch.equal(model.eval()(images), restored.eval()(images))


def test_checkpoints_are_loaded_with_weights_only(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "extra": {"payload": object()}}, path)  # arbitrary objects are refused
    with pytest.raises(Exception, match=r"[Ww]eights only"):
        load_checkpoint(path, tiny_model())


def test_command_line_prints_a_json_last_line(capsys):
    result = train_cli(["--dataset", "digits", "--epochs", "1", "--no-progress", "--threads", "1"])
    last_line = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last_line) == result
    assert {"test_accuracy", "seconds", "epochs", "params"} <= result.keys()
    assert result["epochs"] == 1 and 0.0 <= result["test_accuracy"] <= 1.0 and result["params"] > 0


def test_mixed_precision_policy():
    from vit_lib.training import amp_dtype, grad_scaler

    assert amp_dtype(torch.device("cpu")) is None
    assert not grad_scaler(torch.device("cpu")).is_enabled()


@pytest.mark.cuda
def test_cuda_step_uses_bf16_or_fp16_autocast():
    from vit_lib.training import amp_dtype, autocast

    device = torch.device("cuda")
    expected = torch.bfloat16 if torch.cuda.get_device_capability() >= (8, 0) else torch.float16
    assert amp_dtype(device) == expected
    model = tiny_model().to(device)
    with autocast(device):
        assert model(torch.randn(2, 1, 8, 8, device=device)).dtype == expected
    train_loader, test_loader = loaders()
    history = train(model, train_loader, test_loader, TrainConfig(epochs=6, lr=3e-3, progress=False), device)
    assert history.test_accuracy[-1] == 1.0
