"""Fault injection: what a kill, a full disk, a second run or a crafted file does to a run (docs/RELIABILITY.md).

- SIGKILL inside a checkpoint save, and inside a shard write, then resume: the same weights / shards as an
  uninterrupted run, and no temp file left anywhere.
- A full disk while saving (a real 2 MB tmpfs when this process may mount one, else ENOSPC injected at the write):
  one line that says so, the last good checkpoint intact, no temp folder left, and the run resumes once there is space.
- Two runs into one folder: the second fails naming the first; a killed owner's lock is taken over.
- `--resume` on shards of another tokenizer is refused.
- Crafted checkpoints and shards (sizes that do not fit the weights, huge widths, out-of-range ids, huge or negative
  labels, a pickle payload) are refused in well under 2 s, in one line, before anything big is allocated.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import pickle
import shutil
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import engine_tiny_task
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from typer.testing import CliRunner
from vim_fixtures import lm_config, make_shards, make_tokenizer

from vimtool.checkpoint import load_model, read_pointer, save_model, tokenizer_identity
from vimtool.commands import app
from vimtool.data.shards import ShardWriter, TokenizerIdentity, load_token_table, tokenizer_record
from vimtool.errors import VimtoolError
from vimtool.models.vim import VIM, size_config
from vimtool.train import TrainConfig, train

TESTS = Path(__file__).resolve().parent
ENGINE_ARGS = ["--steps", "10", "--accum", "2", "--ema", "0.9", "--save-every", "4"]
FILES = ["model.safetensors", "state/models/model.safetensors", "state/ema.safetensors"]


def _leftovers(folder: Path) -> list[str]:
    """Every temporary file or folder under `folder` (any name with `.tmp` in it, whatever the writer's convention)."""
    return sorted(str(Path(d, n)) for d, dirs, files in os.walk(folder) for n in dirs + files if ".tmp" in n)


def _python(code: str, **kw) -> subprocess.Popen:
    """`code` in a fresh interpreter that imports the tests' helpers and vimtool from this checkout."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(TESTS.parent), str(TESTS)])}
    return subprocess.Popen([sys.executable, "-c", code], env=env, text=True, **kw)


def _engine(out: Path, *extra: str, fault: str = "") -> subprocess.CompletedProcess:
    """tests/engine_tiny_task.py in a subprocess, after `fault` (Python) has planted its fault."""
    argv = ["--out", str(out), *ENGINE_ARGS, *extra]
    proc = _python(
        f"import engine_tiny_task as t\n{fault}\nt.main({argv!r})", stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    stdout, stderr = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def _final(out: Path) -> dict:
    return {f: load_file(str(out / "final" / f)) for f in FILES}


# ------------------------------------------------------------------------------------------------- kills
KILL_IN_SAVE = """
import os, signal
import vimtool.checkpoint as c
real = c.st_save_model
def dying(model, filename, *a, **k):  # the weights of step 8 half-way into their temp folder, then SIGKILL
    real(model, filename, *a, **k)
    if ".tmp-step_000008" in filename:
        os.kill(os.getpid(), signal.SIGKILL)
c.st_save_model = dying
"""


@pytest.mark.slow
def test_sigkill_inside_a_checkpoint_save_then_resume_equals_an_uninterrupted_run(tmp_path):
    res = _engine(tmp_path / "uninterrupted")
    assert res.returncode == 0, res.stderr
    out = tmp_path / "killed"
    res = _engine(out, fault=KILL_IN_SAVE)
    assert res.returncode == -9, res.stderr
    assert _leftovers(out), "the kill should have left the save's temp folders"  # the fault happened mid-save
    assert read_pointer(out / "latest").name == "step_000004"
    res = _engine(out, "--resume")
    assert res.returncode == 0, res.stderr
    a, b = _final(out), _final(tmp_path / "uninterrupted")
    assert all(torch.equal(a[f][k], b[f][k]) for f in a for k in a[f])
    assert _leftovers(out) == []


KILL_IN_SHARD = """
import os, signal
import pyarrow.parquet as pq
real = pq.write_table
def dying(table, where, *a, **k):  # shard 1 written to its temp name, then SIGKILL before the rename
    real(table, where, *a, **k)
    if "shard-r000-00001" in str(where):
        os.kill(os.getpid(), signal.SIGKILL)
pq.write_table = dying
from vimtool.tokenize import TokenizeConfig, tokenize_dataset
tokenize_dataset(TokenizeConfig(tokenizer={tok!r}, data="shapes:size=16,n=12", out={out!r}, rows_per_shard=4, batch_size=4, progress=False))
"""


def _tokenize(tok: Path, out: Path) -> list[Path]:
    from vimtool.tokenize import TokenizeConfig, tokenize_dataset

    cfg = TokenizeConfig(tokenizer=str(tok), data="shapes:size=16,n=12", out=str(out), rows_per_shard=4, batch_size=4,
                         progress=False)  # fmt: skip
    return tokenize_dataset(cfg)


@pytest.mark.slow
def test_sigkill_inside_a_shard_write_then_rerun_equals_an_uninterrupted_run(tmp_path):
    tok = make_tokenizer(tmp_path / "tok")
    whole = _tokenize(tok, tmp_path / "whole")
    out = tmp_path / "killed"
    proc = _python(KILL_IN_SHARD.format(tok=str(tok), out=str(out)), stderr=subprocess.PIPE)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == -9, stderr
    assert _leftovers(out) and not (out / "shard-r000-00001.parquet").exists()
    again = _tokenize(tok, out)
    assert [p.name for p in again] == [p.name for p in whole]
    for a, b in zip(again, whole):
        assert pq.read_table(a).equals(pq.read_table(b)) and pq.read_schema(a).metadata == pq.read_schema(b).metadata
    assert _leftovers(out) == []


# -------------------------------------------------------------------------------------------- full disk
@contextmanager
def _small_disk(folder: Path, size: str = "2m"):
    """A `size` tmpfs at `folder` (None when this process may not mount one), unmounted afterwards."""
    folder.mkdir()
    mounted = (
        shutil.which("mount") is not None
        and subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True).returncode == 0
    )  # fmt: skip
    try:
        yield folder if mounted else None
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(folder)], check=False)


def _fill(disk: Path) -> None:
    with open(disk / "filler", "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError as e:
            assert e.errno == errno.ENOSPC


class _FillsTheDisk(engine_tiny_task.RegressionTask):
    """Fills the disk during step 6, so the save of step 8 finds no space (the step-4 checkpoint is already there)."""

    def __init__(self, disk: Path | None, **kw) -> None:
        super().__init__(**kw)
        self.disk = disk

    def train_step(self, models, batch, step):
        if step == 6 and self.disk is not None and not (self.disk / "filler").exists():
            _fill(self.disk)
        return super().train_step(models, batch, step)


def _tiny_cfg(out: Path, **kw) -> TrainConfig:
    base = dict(out_dir=str(out), steps=10, batch_size=8, lr=1e-2, save_every=4, log_every=100, progress=False)
    return TrainConfig(**{**base, **kw})


def test_a_full_disk_while_saving_is_one_line_keeps_the_last_checkpoint_and_leaves_no_temp(tmp_path, monkeypatch):
    with _small_disk(tmp_path / "disk") as disk:
        out = (disk or tmp_path) / "run"
        if disk is None:  # no tmpfs here: ENOSPC as safetensors reports it, at the write of step 8's weights
            import vimtool.checkpoint as c

            real = c.st_save_model

            def full(model, filename, *a, **k):
                if ".tmp-step_000008" in filename:
                    raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
                return real(model, filename, *a, **k)

            monkeypatch.setattr(c, "st_save_model", full)
        with pytest.raises(VimtoolError) as err:
            train(_FillsTheDisk(disk), _tiny_cfg(out))
        msg = str(err.value)
        assert "\n" not in msg and "no space left" in msg and "step_000004" in msg and "--resume" in msg
        assert read_pointer(out / "latest").name == "step_000004"
        assert load_model(out / "latest") is not None  # the last good checkpoint is whole
        assert json.loads((out / "latest" / "state" / "trainer.json").read_text())["step"] == 4
        assert _leftovers(out) == []  # the failed save removed its temp folder
        if disk is not None:
            (disk / "filler").unlink()
        monkeypatch.undo()
        final = train(_FillsTheDisk(None), _tiny_cfg(out, resume=True))  # space again: it resumes and finishes
        assert final.name == "step_000010"


def test_a_full_disk_reaches_the_user_as_one_error_line(tmp_path, monkeypatch):
    with _small_disk(tmp_path / "disk", size="64k") as disk:
        if disk is None:
            from PIL import Image

            def full(self, fp, *a, **k):
                raise OSError(errno.ENOSPC, "No space left on device")

            monkeypatch.setattr(Image.Image, "save", full)
        else:
            _fill(disk)
        png = (disk or tmp_path) / "preview.png"
        res = CliRunner().invoke(
            app, ["data", "preview", "--data", "shapes:n=4", "--n", "4", "--size", "32", "--out", str(png)]
        )
        lines = [line for line in res.output.splitlines() if line.strip()]
        assert res.exit_code == 2 and "Traceback" not in res.output, res.output
        assert lines[-1].startswith("error: ") and "no space left" in lines[-1], res.output
        assert not png.exists() and _leftovers(png.parent) == []


# ------------------------------------------------------------------------------------- concurrent writers
HOLDS_THE_RUN = """
import time
real = t.RegressionTask.train_step
def slow(self, models, batch, step):
    if step == 1:
        print("TRAINING", flush=True)
        time.sleep(300)
    return real(self, models, batch, step)
t.RegressionTask.train_step = slow
"""


@pytest.mark.slow
def test_a_second_run_into_the_same_folder_fails_naming_the_first_and_a_killed_owner_is_taken_over(tmp_path, caplog):
    out = tmp_path / "run"
    argv = ["--out", str(out), *ENGINE_ARGS]
    first = _python(
        f"import engine_tiny_task as t\n{HOLDS_THE_RUN}\nt.main({argv!r})",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert first.stdout.readline().strip() == "TRAINING", first.stderr.read()
        t0 = time.perf_counter()
        with pytest.raises(VimtoolError, match=rf"in use by another run \(pid {first.pid} on host "):
            train(engine_tiny_task.RegressionTask(), _tiny_cfg(out))
        assert time.perf_counter() - t0 < 10
    finally:
        first.kill()
        first.communicate()
    assert (out / "run.lock").exists()  # SIGKILL: the owner could not remove it
    with caplog.at_level(logging.WARNING, logger="vimtool.train.runlock"):
        final = train(engine_tiny_task.RegressionTask(), _tiny_cfg(out))
    assert f"taking over the lock of pid {first.pid}" in caplog.text
    assert final.name == "step_000010" and not (out / "run.lock").exists()


# ----------------------------------------------------------------------------- resume with other shards
def _captioned_shards(folder: Path, tok: Path) -> Path:
    identity = TokenizerIdentity.from_dict(tokenizer_identity(tok))
    tokens = torch.randint(
        0, identity.codebook_size, (48, identity.num_tokens), generator=torch.Generator().manual_seed(0)
    )
    with ShardWriter(folder, identity) as w:
        w.add_batch(
            tokens, None, [f"a {c} circle" for c in ["red", "blue", "green"] * 16], [f"s{i}" for i in range(48)]
        )
    return folder


@pytest.mark.parametrize("task", ["train-lm", "train-t2i"])
def test_resume_refuses_shards_of_another_tokenizer(tmp_path, task):
    from vimtool.train.lm import train_lm
    from vimtool.train.t2i import T2IRunConfig, train_t2i

    tok, other = make_tokenizer(tmp_path / "tok"), make_tokenizer(tmp_path / "other", seed=1)
    out = tmp_path / "run"
    if task == "train-lm":
        mine, theirs = make_shards(tmp_path / "a", tok), make_shards(tmp_path / "b", other)
        train_lm(lm_config(mine, out, steps=2))
        run = lambda: train_lm(lm_config(theirs, out, steps=4, train={"resume": True}))  # noqa: E731
    else:
        mine, theirs = _captioned_shards(tmp_path / "a", tok), _captioned_shards(tmp_path / "b", other)

        def cfg(shards, steps, resume=False):
            train = TrainConfig(
                out_dir=str(out), steps=steps, batch_size=8, save_every=0, progress=False, resume=resume
            )
            return T2IRunConfig(shards=[str(shards)], size="micro", text_vocab_size=300, train=train)

        train_t2i(cfg(mine, 2))
        run = lambda: train_t2i(cfg(theirs, 4, resume=True))  # noqa: E731
    with pytest.raises(VimtoolError, match="tokenizer mismatch"):
        run()
    assert read_pointer(out / "latest").name == "step_000002"  # nothing trained on the foreign tokens


# ------------------------------------------------------------------------------------------ crafted files
@pytest.fixture(scope="module")
def vim_checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("crafted")
    tok = make_tokenizer(root / "tok")
    record = tokenizer_record(TokenizerIdentity.from_dict(tokenizer_identity(tok)), str(tok))
    model = VIM(size_config("micro", vocab_size=64, grid=(4, 4), num_classes=3))
    load_model(save_model(model, root / "warm", extra=record))  # imports warm: the timings below are the checks'
    return save_model(model, root / "vim", extra=record)


def _refused_fast(call, match: str) -> None:
    # CPU seconds of this process, not wall time: a loaded machine (parallel test workers) stretches the wall clock
    # but not the work done; building the crafted model's tensors would take far more than 2 CPU-seconds.
    t0 = time.process_time()
    with pytest.raises(VimtoolError, match=match) as err:
        call()
    assert time.process_time() - t0 < 2.0, "a crafted file must be refused before anything big is allocated"
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "edit, match",
    [
        ({"dim": 4096}, "larger than model.safetensors holds"),
        ({"dim": 65536}, "larger than model.safetensors holds"),
        ({"num_classes": 2_000_000_000}, "larger than model.safetensors holds"),
        ({"depth": 1_000_000}, "larger than model.safetensors holds"),
        ({"grid": [100000, 100000]}, "larger than model.safetensors holds|tensor shape"),
        ({"dim": -32}, r"dim=-32 must be >= 1"),
        ({"heads": 3}, "not divisible by 3 heads"),
        ({"mlp_dim": 128}, "tensor shape"),
    ],
    ids=lambda v: json.dumps(v) if isinstance(v, dict) else None,
)
def test_a_checkpoint_whose_config_does_not_fit_its_weights_is_refused_fast(tmp_path, vim_checkpoint, edit, match):
    folder = tmp_path / "ckpt"
    shutil.copytree(vim_checkpoint, folder)
    meta = json.loads((folder / "config.json").read_text())
    meta["config"].update(edit)
    (folder / "config.json").write_text(json.dumps(meta))
    _refused_fast(lambda: load_model(folder), match)


class _Payload:
    """Unpickling this opens (creates) a file: what a hostile checkpoint would do, harmlessly."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_pickle_payload_in_a_checkpoint_is_never_unpickled(tmp_path, vim_checkpoint):
    marker = tmp_path / "pwned"
    # a checkpoint that ships pytorch_model.bin instead of safetensors: refused, never torch.load-ed
    folder = tmp_path / "bin_ckpt"
    shutil.copytree(vim_checkpoint, folder)
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(_Payload(marker)))
    _refused_fast(lambda: load_model(folder), "model.safetensors is missing")
    # training state (optimizer moments, RNG) is the one torch.load, with weights_only=True
    run = tmp_path / "run"
    train(engine_tiny_task.RegressionTask(), _tiny_cfg(run, steps=4))
    (run / "latest" / "state" / "optimizers.pt").write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(VimtoolError, match="not a vimtool state file"):
        train(engine_tiny_task.RegressionTask(), _tiny_cfg(run, steps=8, resume=True))
    assert not marker.exists()


def _write_shard(path: Path, tokens: np.ndarray, labels: list, codebook: int = 64, grid=(4, 4)) -> Path:
    """A shard written around ShardWriter (which refuses such rows): what another tool or a bit flip makes."""
    ident = {"name": "crafted", "sha256": "0" * 64, "codebook_size": codebook, "grid": list(grid), "image_size": 16}
    n, t = tokens.shape
    column = pa.ListArray.from_arrays(pa.array(np.arange(0, (n + 1) * t, t, dtype=np.int32)),
                                      pa.array(tokens.reshape(-1), type=pa.uint16()))  # fmt: skip
    table = pa.table({"tokens": column, "label": pa.array(labels, type=pa.int32()),
                      "caption": pa.array([None] * n, type=pa.string()), "source_id": pa.array([str(i) for i in range(n)])})  # fmt: skip
    meta = {"format": 1, "identity": ident, "vocab_size": codebook, "grid": list(grid), "rows": n}
    pq.write_table(table.replace_schema_metadata({b"vimtool": json.dumps(meta).encode()}), path)
    return path


ROWS = np.arange(8 * 16).reshape(8, 16) % 64


@pytest.mark.parametrize(
    "tokens, labels, meta, match",
    [
        (np.where(ROWS == 5, 100, ROWS), [0] * 8, {}, "token id 100 is out of range for the tokenizer's 64 codes"),
        (ROWS, [0] * 7 + [2_000_000_000], {}, "label 2000000000 is out of range"),
        (ROWS, [0] * 7 + [-3], {}, "label -3 is out of range"),
        (ROWS, [0] * 8, {"grid": (8, 8)}, "unequal length"),
        (ROWS, [0] * 8, {"codebook": 10**9}, "corrupt"),
    ],
    ids=["token id", "huge label", "negative label", "bad size", "huge codebook"],
)
def test_a_crafted_shard_is_refused_fast_when_opened(tmp_path, tokens, labels, meta, match):
    shard = _write_shard(tmp_path / "s.parquet", tokens.astype(np.uint16), labels, **meta)
    _refused_fast(lambda: load_token_table([shard]), match)
    res = CliRunner().invoke(
        app, ["train-lm", "--shards", str(shard), "--size", "micro", "--out-dir", str(tmp_path / "r")]
    )
    assert res.exit_code == 2 and res.output.strip().splitlines()[-1].startswith("error: "), res.output


def test_without_flock_a_dead_owners_lock_is_taken_over_and_a_live_one_refused(tmp_path, monkeypatch, caplog):
    from vimtool.train import runlock

    monkeypatch.setattr(runlock, "fcntl", None)  # a platform or file system without flock: O_CREAT|O_EXCL
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # its pid is free now
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        for owner, folder in ((alive, tmp_path / "busy"), (gone, tmp_path / "stale")):
            folder.mkdir()
            lock = {"pid": owner.pid, "host": socket.gethostname(), "started": "earlier"}
            (folder / runlock.LOCK_FILE).write_text(json.dumps(lock))
        with pytest.raises(VimtoolError, match=rf"pid {alive.pid} on host .* remove the lock: rm "):
            runlock.take(tmp_path / "busy")
        with caplog.at_level(logging.WARNING, logger="vimtool.train.runlock"):
            runlock.take(tmp_path / "stale").release()
        assert f"lock of pid {gone.pid} on host" in caplog.text and not (tmp_path / "stale" / "run.lock").exists()
    finally:
        alive.kill()
        alive.wait()


@pytest.mark.parametrize(
    "exc, says",
    [
        (OSError(errno.ENOSPC, "No space left on device", "/x/model.safetensors"), "no space left on the device"),
        (SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)"), "no space left"),
        (OSError("Error writing bytes to file. Detail: [errno 28] No space left on device"), "no space left"),
        (PermissionError(errno.EACCES, "Permission denied", "/x"), "permission denied"),
        (OSError(errno.EROFS, "Read-only file system", "/x"), "read-only file system"),
        (NotADirectoryError(errno.ENOTDIR, "Not a directory", "/x/file/sub"), "is a file, not a folder"),
        (FileExistsError(errno.EEXIST, "File exists", "/x/file"), "exists and is not a folder"),
    ],
)
def test_a_file_system_failure_the_user_can_fix_is_one_line_that_says_what_to_do(tmp_path, monkeypatch, exc, says):
    from vimtool import atomic

    err = atomic.storage_error(exc, "/x/target")
    assert err is not None and says in str(err) and "\n" not in str(err)
    # ... also from inside an atomic writer, which leaves the old file as it was and no temp file
    target = atomic.write_text(tmp_path / "old.txt", "old")

    def failing(src, dst):
        raise exc

    monkeypatch.setattr(atomic.os, "replace", failing)
    with pytest.raises(VimtoolError, match=says):
        atomic.write_text(target, "new")
    assert target.read_text() == "old" and _leftovers(tmp_path) == []
    assert atomic.storage_error(RuntimeError("a bug"), "/x") is None  # anything else keeps its traceback
