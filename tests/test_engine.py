"""The training engine in-process on a tiny CPU task: layout, accumulation, lr multipliers, two optimizers,
EMA, NaN stop, atomic saves, resume guards, schedules and the data split (tests/engine_tiny_task.py)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from engine_tiny_task import GanLikeTask, RegressionTask
from safetensors.torch import load_file

from vimtool import checkpoint as ckpt
from vimtool.errors import VimtoolError
from vimtool.train import TrainConfig, train
from vimtool.train import state as st
from vimtool.train.schedules import lr_factor


def _cfg(tmp_path, **kw) -> TrainConfig:
    base = dict(
        out_dir=str(tmp_path / "run"),
        steps=6,
        batch_size=8,
        lr=1e-2,
        min_lr=1e-3,
        warmup_steps=2,
        save_every=3,
        log_every=2,
        progress=False,
        weight_decay=0.01,
        clip_grad=1.0,
    )
    return TrainConfig(**{**base, **kw})


def _weights(folder, name="model.safetensors"):
    return load_file(str(folder / name))


def test_run_writes_checkpoints_pointers_metrics_and_card(tmp_path):
    task = RegressionTask()
    final = train(task, _cfg(tmp_path))
    run = tmp_path / "run"
    assert final == run / "checkpoints" / "step_000006"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_000003", "step_000006"]
    assert ckpt.read_pointer(run / "latest") == final.resolve() == ckpt.read_pointer(run / "final")
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train_recs = [r for r in records if "loss/model" in r]
    assert [r["step"] for r in train_recs] == [2, 4, 6] and all(r["samples_per_s"] > 0 for r in train_recs)
    assert any("eval/mse" in r for r in records)
    assert "| steps | 6 |" in (final / "README.md").read_text()
    model = ckpt.load_model(run)  # a run folder loads its final model
    assert all(
        torch.equal(v, model.state_dict()[k]) for k, v in _weights(final, "state/models/model.safetensors").items()
    )
    assert task.dataset.epochs_seen == [0, 1]  # 40 items / batch 8 = 5 steps per epoch; steps 0-5 span 2 epochs
    assert json.loads((final / "state" / "trainer.json").read_text())["step"] == 6


def test_grad_accumulation_matches_one_big_batch(tmp_path):
    one, four = RegressionTask(dropout=0.0, noise=0.0), RegressionTask(dropout=0.0, noise=0.0)
    a = train(one, _cfg(tmp_path / "a", grad_accum=1))
    b = train(four, _cfg(tmp_path / "b", grad_accum=4))
    assert [sorted(sum(four.seen_indices[i : i + 4], [])) for i in range(0, len(four.seen_indices), 4)] == [
        sorted(s) for s in one.seen_indices
    ]
    wa, wb = _weights(a), _weights(b)
    assert max((wa[k] - wb[k]).abs().max().item() for k in wa) < 1e-5  # float summation order only


def test_every_lr_multiplier_and_decay_flag_reaches_the_optimizer(tmp_path):
    mults = {"inp.weight": 2.5, "out.bias": 4.0, "norm.weight": 0.5}
    seen = []

    class Hinted(GanLikeTask):
        def build_models(self):
            models = super().build_models()
            for name, p in models["model"].named_parameters():
                if name in mults:
                    p.lr_mult = mults[name]
            return models

        def train_step(self, models, batch, step):
            by_param = {
                id(p): g for opt in self.engine.optimizers.values() for g in opt.param_groups for p in g["params"]
            }
            for mod in ("model", "disc"):
                for name, p in self.engine.unwrap(models[mod]).named_parameters():
                    g = by_param[id(p)]
                    seen.append((step, mod, name, g["lr"], g["weight_decay"]))
            return super().train_step(models, batch, step)

    cfg = _cfg(tmp_path, steps=4, schedule="cosine")
    train(Hinted(disc_start=0), cfg)
    assert len({(s[1], s[2]) for s in seen}) == 6 + 4  # every parameter of both models, every step
    for step, mod, name, lr, wd in seen:
        base = 2e-3 if mod == "disc" else cfg.lr  # the discriminator's OptimizerSpec overrides lr
        f = lr_factor(step, schedule="cosine", steps=4, warmup_steps=2, lr=cfg.lr, min_lr=cfg.min_lr)
        assert lr == pytest.approx(base * mults.get(name, 1.0) * f, rel=1e-12), (step, mod, name)
        decays = name.endswith("weight") and "norm" not in name
        assert wd == (cfg.weight_decay if decays else 0.0), (mod, name)


def test_two_optimizers_generator_loss_does_not_leak_into_discriminator(tmp_path):
    # After one step, the discriminator only saw its own loss: scaling the generator's adversarial term changes
    # the generator but must leave the discriminator bit-identical.
    runs = {
        w: train(GanLikeTask(disc_start=0, adv_weight=w), _cfg(tmp_path / str(w), steps=1, save_every=1))
        for w in (0.1, 100.0)
    }
    d = {w: _weights(p, "state/models/disc.safetensors") for w, p in runs.items()}
    g = {w: _weights(p, "state/models/model.safetensors") for w, p in runs.items()}
    assert all(torch.equal(d[0.1][k], d[100.0][k]) for k in d[0.1])
    assert any(not torch.equal(g[0.1][k], g[100.0][k]) for k in g[0.1])


def test_optimizer_without_a_loss_skips_the_step(tmp_path):
    torch.manual_seed(0)
    initial = GanLikeTask().build_models()["disc"].state_dict()
    final = train(GanLikeTask(disc_start=2), _cfg(tmp_path, steps=4, save_every=2))
    before = _weights(final.parent / "step_000002", "state/models/disc.safetensors")
    after = _weights(final, "state/models/disc.safetensors")
    assert all(torch.equal(before[k], initial[k]) for k in initial)  # no disc loss yet: untouched
    assert any(not torch.equal(after[k], initial[k]) for k in initial)


@pytest.mark.slow
def test_compiled_training_matches_eager_and_saves_plain_names(tmp_path):
    # train.compile: torch.compile (inductor, a real C++ build on CPU) of the trained model; same math, so the same
    # weights up to float rounding, and checkpoints (model, state, EMA) keep the module's own parameter names
    from torch._dynamo.utils import counters

    eager_task, task = RegressionTask(dropout=0.0, noise=0.0), RegressionTask(dropout=0.0, noise=0.0)
    eager = train(eager_task, _cfg(tmp_path / "eager", ema=0.5))
    frames = counters["frames"]["ok"]
    compiled = train(task, _cfg(tmp_path / "compiled", ema=0.5, compile=True))
    assert eager_task.model_kinds == {"TinyMLP"} and task.model_kinds == {"OptimizedModule"}
    assert counters["frames"]["ok"] > frames  # dynamo really captured graphs
    for name in ("model.safetensors", "state/models/model.safetensors", "state/ema.safetensors"):
        we, wc = _weights(eager, name), _weights(compiled, name)
        assert sorted(wc) == sorted(we) and not any("_orig_mod" in k for k in wc)
        assert max((we[k] - wc[k]).abs().max().item() for k in we) < 1e-5
    assert ckpt.load_model(tmp_path / "compiled" / "run").config == ckpt.load_model(tmp_path / "eager" / "run").config


def test_ema_weights_are_the_saved_model_weights(tmp_path):
    final = train(RegressionTask(), _cfg(tmp_path, ema=0.5))
    model, ema, raw = (
        _weights(final),
        _weights(final, "state/ema.safetensors"),
        _weights(final, "state/models/model.safetensors"),
    )
    assert all(torch.equal(model[k], ema[k]) for k in ema)
    assert any(not torch.equal(model[k], raw[k]) for k in raw)


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_last_good_checkpoint(tmp_path):
    with pytest.raises(VimtoolError, match=r"not finite at step 5.*step_000004"):
        train(RegressionTask(nan_at=5), _cfg(tmp_path, steps=8, save_every=2))
    run = tmp_path / "run"
    assert ckpt.read_pointer(run / "latest").name == "step_000004" and not (run / "final").exists()
    assert all(torch.isfinite(v).all() for v in _weights(run / "latest").values())


def test_crash_mid_save_leaves_latest_on_the_previous_complete_checkpoint(tmp_path, monkeypatch):
    real, calls = st.write_json, []

    def flaky(obj, path):
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk full (simulated)")
        real(obj, path)

    monkeypatch.setattr(st, "write_json", flaky)
    with pytest.raises(OSError, match="simulated"):
        train(RegressionTask(), _cfg(tmp_path, steps=6, save_every=2))
    run = tmp_path / "run"
    assert ckpt.read_pointer(run / "latest").name == "step_000002"
    assert not (run / "checkpoints" / "step_000004").exists()
    assert not list((run / "checkpoints").glob(".tmp-*")), "the failed save's temp folder is removed"
    monkeypatch.setattr(st, "write_json", real)
    final = train(RegressionTask(), _cfg(tmp_path, steps=6, save_every=2, resume=True))
    assert final.name == "step_000006" and not (run / "checkpoints" / ".tmp-step_000004").exists()


def test_existing_run_needs_resume_and_resume_continues_at_the_saved_step(tmp_path):
    train(RegressionTask(), _cfg(tmp_path, steps=4, save_every=4))
    with pytest.raises(VimtoolError, match="--resume"):
        train(RegressionTask(), _cfg(tmp_path, steps=4))
    more = RegressionTask()
    final = train(more, _cfg(tmp_path, steps=7, save_every=4, resume=True))
    assert final.name == "step_000007" and len(more.seen_indices) == 3  # steps 4, 5, 6 only
    done = RegressionTask()
    assert train(done, _cfg(tmp_path, steps=7, resume=True)) == final and done.seen_indices == []


def test_train_pushes_the_final_model_when_asked(tmp_path, monkeypatch):
    import huggingface_hub

    pushed = {}
    # Only the live Hub calls are mocked (there is no network here).
    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", lambda self, repo_id, **kw: None)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", lambda self, **kw: pushed.update(kw) or "url")
    final = train(RegressionTask(), _cfg(tmp_path, steps=2, push_to_hub="me/tiny"))
    assert pushed["repo_id"] == "me/tiny" and pushed["folder_path"] == str(final)


@pytest.mark.parametrize(
    "kw,n,message",
    [
        (dict(batch_size=6, grad_accum=4), 40, "divisible by grad_accum"),
        (dict(batch_size=8), 4, "fewer than one global batch"),
        (dict(schedule="exp", min_lr=0.0), 40, "min_lr, which must be > 0"),
        (dict(trackers=["nosuch"]), 40, "unknown tracker"),
        (dict(ema=1.0), 40, "train.ema"),
    ],
)
def test_bad_settings_are_one_line_errors(tmp_path, kw, n, message):
    with pytest.raises(VimtoolError, match=message):
        train(RegressionTask(n=n), _cfg(tmp_path, **kw))


def test_schedules_follow_the_papers():
    vim = dict(schedule="exp", steps=450_000, warmup_steps=5_000, lr=4.5e-4, min_lr=1e-5, decay_start=80_000)
    assert lr_factor(2_499, **vim) == pytest.approx(0.5)  # linear warmup over 5k steps
    assert lr_factor(4_999, **vim) == 1.0 and lr_factor(79_999, **vim) == 1.0  # flat until the decay starts at 80k
    assert lr_factor(449_999, **vim) * 4.5e-4 == pytest.approx(1e-5)  # reaches 1e-5 at the end
    mid = (80_000 + 449_999) // 2
    assert lr_factor(mid, **vim) == pytest.approx(math.sqrt(1e-5 / 4.5e-4), rel=1e-4)  # geometric half-way
    vq = dict(schedule="cosine", steps=500_000, warmup_steps=50_000, lr=1e-4, min_lr=5e-5)
    assert lr_factor(50_000, **vq) == 1.0 and lr_factor(499_999, **vq) * 1e-4 == pytest.approx(5e-5)
    parti = dict(schedule="exp", steps=100, warmup_steps=10, lr=4.5e-5, min_lr=1e-6, decay_start=0)
    assert lr_factor(10, **parti) == 1.0 and lr_factor(11, **parti) < 1.0  # decays right after warmup
    assert lr_factor(50, schedule="constant", steps=100, warmup_steps=10, lr=1.0, min_lr=0.0) == 1.0


def test_ranks_split_each_global_batch_and_epochs_reshuffle():
    kw = dict(batch_size=8, seed=3, epoch=1, first_step=5, end_step=10)
    whole = list(st.RankBatchSampler(40, grad_accum=1, world_size=1, rank=0, **kw))
    parts = [list(st.RankBatchSampler(40, grad_accum=2, world_size=2, rank=r, **kw)) for r in range(2)]
    for s, batch in enumerate(whole):  # micro-batch m of rank r: rank 0 then rank 1 inside each micro-batch
        pieces = [parts[r][2 * s + m] for m in range(2) for r in range(2)]
        assert sum(pieces, []) == batch and all(len(p) == 2 for p in pieces)
    assert sorted(sum(whole, [])) == list(range(40))  # one epoch = every item once
    assert not torch.equal(st.epoch_permutation(40, 3, 0), st.epoch_permutation(40, 3, 1))
    assert torch.equal(st.epoch_permutation(40, 3, 1), st.epoch_permutation(40, 3, 1))


def test_keep_last_prunes_old_checkpoints(tmp_path):
    final = train(RegressionTask(), _cfg(tmp_path, steps=6, save_every=2, keep_last=2))
    assert sorted(p.name for p in final.parent.iterdir()) == ["step_000004", "step_000006"]


def test_train_config_embeds_in_a_command_config_with_overrides():
    from dataclasses import dataclass, field

    from vimtool.config import load_config, parse_set

    @dataclass
    class Cmd:
        data: str = "shapes"
        train: TrainConfig = field(default_factory=TrainConfig)

    cfg = load_config(
        Cmd,
        None,
        parse_set(
            [
                "train.betas=[0.9, 0.96]",
                "train.steps=20",
                "train.clip_grad=4",
                "train.trackers=tensorboard",
                "train.schedule=exp",
            ]
        ),
    )
    assert cfg.train.betas == (0.9, 0.96) and cfg.train.steps == 20 and cfg.train.clip_grad == 4.0
    assert cfg.train.schedule == "exp" and cfg.train.trackers == ["tensorboard"] and cfg.train.lr == TrainConfig().lr


def test_adafactor_trains_with_factored_state_and_resume_refuses_another_optimizer(tmp_path):
    task = RegressionTask(dropout=0.0, noise=0.0)
    # lr is Adafactor's relative step (scaled by each weight's RMS), hence larger than AdamW's
    final = train(task, _cfg(tmp_path, optimizer="adafactor", steps=30, save_every=30, lr=0.3, min_lr=0.03))
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss/model"] for r in records if "loss/model" in r]
    assert losses[-1] < 0.1 * losses[0]  # it learns (observed 12.7 -> 0.49)
    state = torch.load(final / "state" / "optimizers.pt", weights_only=False)["model"]
    # Factored second moments: a (16, 8) weight keeps a row and a column vector, not a (16, 8) matrix.
    shapes = sorted(
        (tuple(s["row_var"].shape), tuple(s["col_var"].shape)) for s in state["state"].values() if "row_var" in s
    )
    assert shapes == [((4, 1), (1, 16)), ((16, 1), (1, 8))]
    assert json.loads((final / "state" / "trainer.json").read_text())["optimizer"] == "adafactor"
    with pytest.raises(VimtoolError, match="another train.optimizer"):
        train(RegressionTask(), _cfg(tmp_path, optimizer="adamw", steps=40, resume=True))


def test_busy_cpu_hint_names_the_threads_option(monkeypatch, caplog):
    from vimtool.train import setup

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(setup.os, "getloadavg", lambda: (9.0, 9.0, 9.0))
    monkeypatch.setattr(setup.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(setup.torch, "get_num_threads", lambda: 2)
    with caplog.at_level("WARNING", logger="vimtool.train.setup"):
        setup.hint_threads(torch.device("cpu"))
    assert "--threads 1" in caplog.text
    caplog.clear()
    monkeypatch.setattr(setup.os, "getloadavg", lambda: (0.5, 0.5, 0.5))  # an idle machine: no hint
    with caplog.at_level("WARNING", logger="vimtool.train.setup"):
        setup.hint_threads(torch.device("cpu"))
    assert caplog.text == ""


def test_accelerate_fsdp_plugin_is_refused_with_a_hint_to_train_parallel(tmp_path, monkeypatch):
    # An accelerate FSDP config (ACCELERATE_USE_FSDP) would wrap the models in FSDP1 behind the engine (and on a CPU
    # silently fall back to DDP): the engine shards with FSDP2 itself, chosen by train.parallel.
    from vimtool.train.setup import make_accelerator

    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")

    class T:
        find_unused_parameters = False

    with pytest.raises(VimtoolError, match="train.parallel=fsdp"):
        make_accelerator(TrainConfig(cpu=True), tmp_path, T())


def test_runs_of_different_precisions_follow_each_other_in_one_process(tmp_path):
    """A tokenizer in fp32, then a transformer in bf16, from one Python process (the Python API, the bench studies):
    accelerate keeps the first run's mixed precision process-wide and refused the second run before the engine
    dropped a finished run's precision."""
    from accelerate.state import AcceleratorState

    for i, precision in enumerate(("fp32", "bf16", "fp32")):
        train(RegressionTask(), _cfg(tmp_path / str(i), precision=precision))
        assert str(AcceleratorState().mixed_precision) == ("bf16" if precision == "bf16" else "no")
