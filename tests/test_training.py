"""The training loop on a tiny model: schedule, per-epoch figures, checkpoints and resuming (in process)."""

import math
import multiprocessing
import random
import sys
import warnings

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

import vit_lib.training as training_module
from vit_lib import SimpleViT
from vit_lib.train import PRESETS
from vit_lib.training import (
    TrainConfig,
    evaluate,
    load_checkpoint,
    load_model,
    param_groups,
    save_checkpoint,
    train,
    warmup_cosine,
)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models on a busy 2-core machine: a second thread only adds waiting (and varies timings)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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
    train(model, train_loader, None, TrainConfig(epochs=1, warmup_epochs=0.5, progress=False))
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


# --- the schedule fits any length -------------------------------------------------------------------


def schedule(warmup_steps, total_steps, base_lr=1.0):
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=base_lr)
    scheduler = warmup_cosine(optimizer, warmup_steps, total_steps)
    lrs = []
    for _ in range(total_steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs, optimizer.param_groups[0]["lr"]


def test_a_warmup_longer_than_half_the_run_is_clamped_and_said():
    # python -m vit_lib.train --dataset cifar10 --epochs 3: 195 steps per epoch, a 5-epoch warmup
    steps_per_epoch = 50_000 // PRESETS["cifar10"]["batch_size"]
    warmup, total = PRESETS["cifar10"]["train"]["warmup_epochs"] * steps_per_epoch, 3 * steps_per_epoch
    with pytest.warns(
        UserWarning, match=rf"{warmup} warmup steps do not fit a run of {total} steps; using 292"
    ):
        lrs, after_last = schedule(warmup, total, base_lr=1e-3)
    peak = lrs.index(max(lrs))
    assert peak == total // 2 - 1 and max(lrs) == pytest.approx(1e-3)  # the preset's peak is reached
    assert all(a < b for a, b in zip(lrs[:peak], lrs[1 : peak + 1]))
    assert all(a >= b for a, b in zip(lrs[peak:], lrs[peak + 1 :]))
    assert after_last == pytest.approx(0.0, abs=1e-15)


def test_schedules_that_fit_are_left_alone():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for preset in PRESETS.values():  # 50 epochs
            warmup_steps = preset["train"]["warmup_epochs"] * 23
            lrs, _ = schedule(warmup_steps, preset["train"]["epochs"] * 23)
            assert max(lrs) == lrs[warmup_steps - 1] == pytest.approx(1.0)
        schedule(4, 8)  # chapter 7's smoke run: 2 epochs, 1 of warmup: exactly half
        schedule(0, 5)  # no warmup


@pytest.mark.parametrize(
    ("warmup", "total", "error"), [(-1, 10, ValueError), (0, 0, ValueError), (1.5, 10, TypeError)]
)
def test_warmup_cosine_rejects_bad_step_counts(warmup, total, error):
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(error, match=r"warmup_steps|total_steps"):
        warmup_cosine(optimizer, warmup, total)


def test_a_short_run_still_decays_to_zero():
    train_loader, _ = loaders()
    with pytest.warns(UserWarning, match="warmup"):
        history = train(
            tiny_model(), train_loader, None, TrainConfig(epochs=2, warmup_epochs=5, progress=False)
        )
    assert history.lr[0] == pytest.approx(TrainConfig.lr * 0.5 * (1 + math.cos(math.pi * 0 / 4)))
    assert history.lr[-1] == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("epochs", 0, ValueError),
        ("epochs", -3, ValueError),
        ("epochs", 2.5, TypeError),
        ("lr", 0.0, ValueError),
        ("lr", -1e-3, ValueError),
        ("lr", float("nan"), ValueError),
        ("warmup_epochs", -1, ValueError),
        ("label_smoothing", 1.0, ValueError),
        ("weight_decay", "0.1", TypeError),
    ],
)
def test_train_config_rejects_bad_values(field, value, error):
    with pytest.raises(error, match=rf"TrainConfig\.{field} must .*{value!r}"):
        TrainConfig(**{field: value})


# --- one host sync per epoch, same figures --------------------------------------------------------------


def test_epoch_figures_are_the_per_step_figures_averaged():
    """The sums kept on the device give what per-step ``.item()`` calls gave: the mean of the steps'
    losses weighted by batch size, and the fraction of correct predictions (here: exactly)."""
    data, seen_labels, seen_logits = easy_task(n=60), [], []

    def collate(batch):
        images, labels = torch.stack([b[0] for b in batch]), torch.stack([b[1] for b in batch])
        seen_labels.append(labels)
        return images, labels

    train_loader = DataLoader(data, batch_size=16, shuffle=True, collate_fn=collate)  # 16, 16, 16, 12
    model = tiny_model()
    model.register_forward_hook(
        lambda module, args, out: seen_logits.append(out.detach()) if module.training else None
    )
    config = TrainConfig(epochs=1, warmup_epochs=0.5, label_smoothing=0.1, progress=False)
    history = train(model, train_loader, DataLoader(data, batch_size=7), config)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
    total = sum(
        loss_fn(logits, labels).item() * len(labels) for logits, labels in zip(seen_logits, seen_labels)
    )
    correct = sum(
        (logits.argmax(-1) == labels).sum().item() for logits, labels in zip(seen_logits, seen_labels)
    )
    assert history.train_loss == [total / 60] and history.train_accuracy == [correct / 60]
    with torch.no_grad():
        logits = model.eval()(data.tensors[0])
    test_loss, test_accuracy = evaluate(model, DataLoader(data, batch_size=7), torch.device("cpu"))
    assert test_loss == pytest.approx(nn.functional.cross_entropy(logits, data.tensors[1]).item(), rel=1e-6)
    assert (
        test_accuracy == (logits.argmax(-1) == data.tensors[1]).sum().item() / 60 == history.test_accuracy[0]
    )


@pytest.mark.parametrize("n", [16, 64])
def test_the_loop_reads_its_sums_back_once_per_epoch(monkeypatch, n):
    """Count the device-to-host reads that the loop itself makes (not the optimizer's, which read CPU
    step counters): two per epoch, training and evaluation, however many steps an epoch has."""
    reads = []

    def counting(name):
        original = getattr(torch.Tensor, name)

        def read(self, *args, **kwargs):
            if sys._getframe(1).f_globals.get("__name__") == "vit_lib.training":
                reads.append(name)
            return original(self, *args, **kwargs)

        return read

    for name in ("item", "tolist", "__float__", "__int__", "__bool__", "cpu", "numpy"):
        monkeypatch.setattr(torch.Tensor, name, counting(name))
    data = easy_task(n=n)
    train_loader = DataLoader(data, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(0))
    train(tiny_model(), train_loader, DataLoader(data, batch_size=8), TrainConfig(epochs=2, progress=False))
    assert reads == ["tolist"] * 4, reads


# --- checkpoints that carry their model -----------------------------------------------------------------


def test_a_checkpoint_after_every_epoch_rebuilds_the_model_alone(tmp_path, monkeypatch):
    written = []
    write = training_module.write_checkpoint
    monkeypatch.setattr(
        training_module,
        "write_checkpoint",
        lambda path, state: written.append(state["epoch"]) or write(path, state),
    )
    train_loader, test_loader = loaders()
    model, path = tiny_model(), tmp_path / "run.pt"
    config = TrainConfig(epochs=3, lr=3e-3, progress=False)
    history = train(model, train_loader, test_loader, config, checkpoint=path, extra={"dataset": "easy"})
    assert written == [1, 2, 3]
    state = torch.load(path, weights_only=True)  # only tensors and plain containers
    assert state["epoch"] == 3 and state["extra"] == {"dataset": "easy"}
    assert state["config"] == dict(
        image_size=8,
        patch_size=4,
        num_classes=2,
        dim=16,
        depth=1,
        heads=2,
        mlp_dim=32,
        channels=1,
        dim_head=8,
        use_flash=True,
    )
    assert state["history"]["test_accuracy"] == history.test_accuracy and len(state["history"]["lr"]) == 3
    assert {"optimizer", "scheduler", "scaler", "rng", "train_config"} <= state.keys()
    rebuilt = load_model(path)
    images = next(iter(test_loader))[0]
    assert not rebuilt.training and torch.equal(rebuilt(images), model.eval()(images))
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind


def test_a_crash_while_writing_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    model, path = tiny_model(), tmp_path / "model.pt"
    save_checkpoint(path, model, note="first")

    def crash(state, file):
        file.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, tiny_model(), note="second")
    monkeypatch.undo()
    assert load_checkpoint(path, tiny_model()) == {"note": "first"}
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("text", r"cannot read it"),
        ("state_dict", r"no 'model' entry"),
        ("list", r"holds a list"),
        ("no_config", r"no 'config' entry"),
    ],
)
def test_a_file_that_is_not_a_checkpoint_gives_a_value_error(tmp_path, content, message):
    path = tmp_path / f"{content}.pt"
    if content == "text":
        path.write_text("not a checkpoint")
    elif content == "state_dict":
        torch.save(tiny_model().state_dict(), path)
    elif content == "list":
        torch.save([1, 2], path)
    else:
        torch.save({"model": tiny_model().state_dict()}, path)  # what save_checkpoint wrote before
    with pytest.raises(ValueError, match=rf"{content}\.pt.*{message}"):
        load_model(path)
    if content != "no_config":
        with pytest.raises(ValueError, match=rf"{content}\.pt.*{message}"):
            load_checkpoint(path, tiny_model())
    else:
        load_checkpoint(path, tiny_model())  # the weights alone still load into a model you build
    with pytest.raises(FileNotFoundError, match=r"missing\.pt"):
        load_model(tmp_path / "missing.pt")


def test_train_checks_what_it_needs_before_the_first_step(tmp_path):
    train_loader, test_loader = loaders()
    model = tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"folder .*nowhere.* does not exist"):
        train(
            model, train_loader, test_loader, TrainConfig(epochs=1), checkpoint=tmp_path / "nowhere" / "x.pt"
        )
    with pytest.raises(ValueError, match="pass model_config"):
        train(
            nn.Sequential(nn.Flatten(), nn.Linear(64, 2)),
            train_loader,
            None,
            TrainConfig(),
            checkpoint=tmp_path / "x.pt",
        )
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# --- resuming: the same run as if never interrupted --------------------------------------------------


class Interrupted(Exception):
    pass


class NoisyTask(Dataset):
    """``easy_task`` plus noise drawn from torch's, NumPy's and Python's global generators each time an
    image is read: augmentation whose randomness a resumed run must repeat."""

    def __init__(self, n=48):
        self.images, self.labels = easy_task(n).tensors

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        noise = 0.1 * torch.randn(self.images[i].shape) + np.random.rand() + random.random()  # noqa: NPY002
        return self.images[i] + noise, self.labels[i]


class InterruptedTestSet(Dataset):
    """A test set whose ``at_pass``-th evaluation raises: a crash after that epoch's training, before
    its checkpoint (as a kill would be)."""

    def __init__(self, data, at_pass=None):
        self.data, self.at_pass, self.passes = data, at_pass, 0

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        self.passes += i == 0
        if self.passes == self.at_pass:
            raise Interrupted
        return self.data[i]


def run_noisy(path, at_pass=None, resume=None, workers=0, epochs=4):
    torch.manual_seed(1)
    model, data = tiny_model(), NoisyTask()
    extra = dict(num_workers=workers, multiprocessing_context="fork" if workers else None)
    train_loader = DataLoader(
        data, batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(3), **extra
    )
    test_loader = DataLoader(
        InterruptedTestSet(TensorDataset(*easy_task(16, seed=1).tensors), at_pass), batch_size=16
    )
    config = TrainConfig(epochs=epochs, lr=3e-3, progress=False)
    history = train(model, train_loader, test_loader, config, checkpoint=path, resume=resume)
    return model, history


def assert_same_run(a, b):
    (model_a, history_a), (model_b, history_b) = a, b
    state_a, state_b = model_a.state_dict(), model_b.state_dict()
    assert max((state_a[k] - state_b[k]).abs().max().item() for k in state_a) <= 1e-6  # measured: 0.0
    for name in ("train_loss", "train_accuracy", "test_loss", "test_accuracy", "lr"):
        assert getattr(history_a, name) == getattr(history_b, name), name
    assert len(history_b.seconds) == len(history_b.lr)


@pytest.mark.parametrize("workers", [0, 1], ids=["in-process", "worker-process"])
def test_an_interrupted_run_resumes_to_the_same_weights_and_history(tmp_path, workers):
    if workers and "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("needs the fork start method")
    epochs = 4 if workers == 0 else 3
    uninterrupted = run_noisy(tmp_path / "full.pt", workers=workers, epochs=epochs)
    cut = tmp_path / "cut.pt"
    with pytest.raises(Interrupted):
        run_noisy(cut, at_pass=epochs - 1, workers=workers, epochs=epochs)
    assert torch.load(cut, weights_only=True)["epoch"] == epochs - 2
    assert_same_run(uninterrupted, run_noisy(cut, resume=cut, workers=workers, epochs=epochs))


def test_resuming_with_other_settings_is_refused(tmp_path):
    path = tmp_path / "run.pt"
    run_noisy(path, epochs=2)
    with pytest.raises(ValueError, match=r"epochs=2 there, 3 here"):
        run_noisy(tmp_path / "other.pt", resume=path, epochs=3)
    with pytest.raises(ValueError, match=r"resumable vit_lib checkpoint"):
        save_checkpoint(tmp_path / "weights.pt", tiny_model())
        run_noisy(tmp_path / "other.pt", resume=tmp_path / "weights.pt", epochs=1)


def test_the_model_config_is_read_back_exactly_through_wrappers(tmp_path):
    from vit_lib.checkpoint import simplevit_config

    kwargs = dict(image_size=(8, 12), patch_size=(4, 2), num_classes=3, dim=16, depth=2, heads=2, mlp_dim=24)
    model = SimpleViT(**kwargs, channels=1, dim_head=8, use_flash=False)

    class Compiled(nn.Module):  # what torch.compile returns keeps the module as `_orig_mod`
        def __init__(self, module):
            super().__init__()
            self._orig_mod = module

    for wrapped in (model, nn.DataParallel(model), Compiled(model)):
        assert simplevit_config(wrapped) == kwargs | dict(channels=1, dim_head=8, use_flash=False)
    save_checkpoint(tmp_path / "wrapped.pt", Compiled(nn.DataParallel(model)))
    images = torch.randn(2, 1, 8, 12)
    assert torch.equal(load_model(tmp_path / "wrapped.pt")(images), model.eval()(images))
    with pytest.raises(ValueError, match=r"Sequential.*pass model_config"):
        simplevit_config(nn.Sequential(nn.Linear(2, 2)))
