"""The NOBLE study's bookkeeping (bench/studies/noble.py, noble_report.py): steps to the target, best LR on the
first seed, conclusions that never outrun the seeds, and resuming without rerunning a finished run."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # bench/ is not a package of the install

from bench.studies import noble as study  # noqa: E402
from bench.studies import noble_report as report  # noqa: E402


def entry(arm, lr, seed, curve, steps=4, model="vim", sec=0.1):
    return {"model": model, "arm": arm, "lr": lr, "seed": seed, "steps": steps, "final_val_loss": curve[-1][1],
            "steps_to_baseline": None, "wall_s": sec * steps, "curve": curve, "sec_per_step": sec}  # fmt: skip


def test_steps_to_interpolates_between_evaluations_and_says_never():
    curve = [[1, 3.0], [2, 2.0], [4, 1.0]]
    assert report.steps_to(curve, 2.5) == pytest.approx(1.5)
    assert report.steps_to(curve, 1.5) == pytest.approx(3.0)
    assert report.steps_to(curve, 3.5) == 1.0
    assert report.steps_to(curve, 0.5) is None


def test_best_lr_is_picked_on_the_first_seed_and_the_target_is_the_baselines_median():
    runs = [
        entry("baseline", 1e-3, 0, [[4, 2.0]]),
        entry("baseline", 3e-3, 0, [[4, 1.9]]),
        entry("baseline", 3e-3, 1, [[4, 2.2]]),
        entry("baseline", 3e-3, 2, [[4, 2.1]]),
        entry("baseline", 1e-3, 1, [[4, 1.0]]),
    ]  # fmt: skip  (a later seed at another LR does not move the pick)
    assert report.best_lr(runs) == 3e-3
    assert report.targets(runs) == {("vim", 4): pytest.approx(2.1)}


def test_conclusions_say_too_few_seeds_and_only_then_compare():
    base = [entry("baseline", 1e-3, s, [[2, 3.0], [4, 2.0]]) for s in range(3)]
    fast = [entry("noble-paper", 1e-3, s, [[2, 2.0], [4, 1.5]], sec=0.2) for s in range(3)]
    slow = [entry("noble-reference", 1e-3, 0, [[2, 3.5], [4, 2.5]])]
    entries = base + fast + slow
    report.refresh_steps_to_baseline(entries)
    assert [e["steps_to_baseline"] for e in fast] == [2.0, 2.0, 2.0] and slow[0]["steps_to_baseline"] is None
    header, rows, notes = report.summarize(entries)
    row = {r[2]: dict(zip(header, r)) for r in rows}
    assert row["noble-paper"]["step speedup"] == pytest.approx(2.0)
    assert row["noble-paper"]["wall speedup"] == pytest.approx(1.0)  # twice the step time eats the 2x
    assert row["noble-paper"]["reached baseline"] == "3/3" and row["noble-reference"]["reached baseline"] == "0/1"
    paper = next(n for n in notes if "noble-paper" in n)
    reference = next(n for n in notes if "noble-reference" in n)
    assert "all 3 seeds" in paper and "faster than the baseline" in paper
    assert "too few for a conclusion" in reference


def test_the_study_resumes_without_rerunning_finished_runs(tmp_path, monkeypatch):
    trained = []

    def fake_train(model, arm, lr, seed, shards, work, a, score=None):
        trained.append((arm, lr, seed))
        loss = {1e-3: 2.0, 3e-3: 1.8}[lr] + 0.01 * seed
        return entry(arm, lr, seed, [[2, loss + 1], [4, loss]])

    monkeypatch.setattr(study, "train_run", fake_train)
    a = argparse.Namespace(steps=4, smoke=False, downstream=False)
    path = tmp_path / "noble_study.json"
    entries = study.load_entries(path)
    for seed, lr in [(0, 1e-3), (0, 3e-3), (1, 3e-3)]:
        study.run_once("vim", "baseline", lr, seed, [], "tok1", tmp_path, entries, path, a)
    record = json.loads(path.read_text())
    assert len(record["runs"]) == 3 and record["rows"] and record["smoke"] is False
    assert set(record["runs"][0]) >= {"model", "arm", "lr", "seed", "steps", "final_val_loss", "steps_to_baseline",
                                      "wall_s", "curve"}  # fmt: skip
    again = study.load_entries(path)  # a second start reads the file back and skips what it holds
    for seed, lr in [(0, 1e-3), (0, 3e-3), (1, 3e-3), (2, 3e-3)]:
        study.run_once("vim", "baseline", lr, seed, [], "tok1", tmp_path, again, path, a)
    assert trained == [("baseline", 1e-3, 0), ("baseline", 3e-3, 0), ("baseline", 3e-3, 1), ("baseline", 3e-3, 2)]
    assert len(json.loads(path.read_text())["runs"]) == 4
    study.check_same_tokenizer(again, "vim", 4, "tok1")
    with pytest.raises(SystemExit, match="same one"):  # other tokens would make the runs incomparable
        study.check_same_tokenizer(again, "vim", 4, "tok2")


def test_two_study_processes_on_one_results_file_keep_each_others_runs(tmp_path, monkeypatch):
    """One study process per core, each on its own arms, writing the same results file: every finished run stays
    (each process rereads the file under a lock before adding its run), and a run one process finished is not
    trained again by the other. Real processes (fork, so the fake trainer below reaches them)."""
    import multiprocessing
    import time

    def fake_train(model, arm, lr, seed, shards, work, a, score=None):
        time.sleep(0.2)  # long enough for the two processes' runs to interleave
        return entry(arm, lr, seed, [[2, 3.0], [4, 2.0 + seed / 10]])

    monkeypatch.setattr(study, "train_run", fake_train)
    path = tmp_path / "noble_study.json"
    a = argparse.Namespace(steps=4, smoke=False, downstream=False)

    def worker(arm, seeds):
        entries = study.load_entries(path)  # read at start: stale as soon as the other process adds a run
        for seed in seeds:
            study.run_once("vim", arm, 1e-3, seed, [], "tok1", tmp_path, entries, path, a)

    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=worker, args=(arm, [0, 1, 2])) for arm in ("baseline", "noble-paper")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    assert [p.exitcode for p in procs] == [0, 0]
    runs = study.load_entries(path)
    assert sorted((e["arm"], e["seed"]) for e in runs) == [(arm, s) for arm in ("baseline", "noble-paper")
                                                           for s in (0, 1, 2)]  # fmt: skip
    trained = []
    monkeypatch.setattr(study, "train_run", lambda *args: trained.append(args) or entry("baseline", 1e-3, 0, []))
    study.run_once("vim", "baseline", 1e-3, 1, [], "tok1", tmp_path, [], path, a)  # a stale, empty list
    assert trained == []  # the file says it is done


def test_ablations_run_at_their_main_arms_best_lr_and_are_judged_against_its_seed_range(tmp_path, monkeypatch):
    entries = [entry("baseline", 3e-3, 0, [[4, 1.90]]), entry("baseline", 1e-3, 0, [[4, 1.95]]),
               entry("noble-paper", 1e-3, 0, [[4, 2.00]]), entry("noble-paper", 3e-3, 0, [[4, 2.05]]),
               entry("noble-paper", 1e-3, 1, [[4, 2.02]]), entry("noble-paper", 1e-3, 2, [[4, 2.04]])]  # fmt: skip
    path = tmp_path / "noble_study.json"
    study.save(path, entries, False)
    trained = []

    def fake_train(model, arm, lr, seed, shards, work, a, score=None):
        trained.append((arm, lr, seed))
        return entry(arm, lr, seed, [[4, {"noble-paper-gelu": 2.10, "noble-paper-r16": 2.01}.get(arm, 2.0)]])

    monkeypatch.setattr(study, "train_run", fake_train)
    a = argparse.Namespace(steps=4, smoke=False, downstream=False)
    todo = [("vim", arm) for arm in study.ARMS]
    study.run_ablations(todo, {"vim": ([], "tok1")}, tmp_path, entries, path, [1e-3, 3e-3], 0, [0], a)
    lrs = {arm: lr for arm, lr, _ in trained}
    # noble-paper's best LR on its sweep seed is 1e-3, the baseline's 3e-3; noble-reference has no runs: skipped
    assert lrs["noble-paper-gelu"] == lrs["noble-paper-r16"] == 1e-3 and lrs["baseline-reference-init"] == 3e-3
    assert "noble-reference-house-init" not in lrs and {s for *_, s in trained} == {0}
    assert set(lrs) == {arm for arm in study.ABLATIONS if report.parent_of(arm) != "noble-reference"}
    notes = report.summarize(study.load_entries(path))[2]
    gelu = next(n for n in notes if "ablation noble-paper-gelu" in n)
    r16 = next(n for n in notes if "ablation noble-paper-r16" in n)
    # noble-paper's three seeds at 1e-3 span 2.00-2.04 (0.04): +0.10 is beyond it, +0.01 is not
    assert "+0.1000" in gelu and "beyond" in gelu and gelu.endswith("worse"), gelu
    assert "+0.0100" in r16 and "within" in r16, r16
    assert not any("edge of the sweep" in n for n in notes if "ablation" in n)


def test_ablations_and_seeds_wait_for_a_complete_sweep_and_take_only_the_arms_given(tmp_path, monkeypatch):
    # the baseline has swept 1e-3 only: a provisional best LR must not be used (another process may still be
    # sweeping 3e-3), so neither its seeds nor its ablations run; noble-paper's sweep is complete
    entries = [entry("baseline", 1e-3, 0, [[4, 1.95]]), entry("noble-paper", 1e-3, 0, [[4, 2.00]]),
               entry("noble-paper", 3e-3, 0, [[4, 2.05]])]  # fmt: skip
    path = tmp_path / "noble_study.json"
    study.save(path, entries, False)
    trained = []
    monkeypatch.setattr(study, "train_run", lambda m, arm, lr, seed, *_: trained.append((arm, lr, seed))
                        or entry(arm, lr, seed, [[4, 2.0]]))  # fmt: skip
    a = argparse.Namespace(steps=4, smoke=False, downstream=False)
    assert study.swept_best_lr(entries, path, "vim", "baseline", [1e-3, 3e-3], 0, a) is None
    assert study.swept_best_lr(entries, path, "vim", "noble-paper", [1e-3, 3e-3], 0, a) == 1e-3
    study.run_ablations([("vim", "baseline")], {"vim": ([], "tok1")}, tmp_path, entries, path, [1e-3, 3e-3], 0, [0], a)
    assert trained == []
    study.run_ablations([("vim", "noble-paper")], {"vim": ([], "tok1")}, tmp_path, entries, path, [1e-3, 3e-3], 0,
                        [0], a)  # fmt: skip
    assert {arm for arm, *_ in trained} == {x for x in study.ABLATIONS if report.parent_of(x) == "noble-paper"}
    assert {(lr, seed) for _, lr, seed in trained} == {(1e-3, 0)}


def test_two_study_processes_on_the_same_arm_split_its_runs_instead_of_training_them_twice(tmp_path, monkeypatch):
    """Both processes are given the same arm and seeds: each run is claimed by the first that reaches it, the other
    skips it, so the results hold each run once. Real processes (fork)."""
    import multiprocessing
    import time

    log = tmp_path / "trained.txt"

    def fake_train(model, arm, lr, seed, shards, work, a, score=None):
        with open(log, "a") as f:
            f.write(f"{seed}\n")
        time.sleep(0.3)
        return entry(arm, lr, seed, [[4, 2.0]])

    monkeypatch.setattr(study, "train_run", fake_train)
    path = tmp_path / "noble_study.json"
    a = argparse.Namespace(steps=4, smoke=False, downstream=False)

    def worker(seeds):
        entries = study.load_entries(path)
        for seed in seeds:
            study.run_once("vim", "baseline", 1e-3, seed, [], "tok1", tmp_path, entries, path, a)

    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=worker, args=(order,)) for order in ([0, 1, 2, 3], [0, 1, 2, 3])]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    assert [p.exitcode for p in procs] == [0, 0]
    assert sorted(int(x) for x in log.read_text().split()) == [0, 1, 2, 3]  # each run trained once
    assert sorted(e["seed"] for e in study.load_entries(path)) == [0, 1, 2, 3]
    assert not list(tmp_path.glob("noble_study.run-*.lock"))  # claims are removed once their run is in the file


def test_the_report_knows_every_main_arm_and_arms_take_no_ablation():
    assert set(report.MAIN_ARMS) == set(study.ARMS)
    assert all(report.parent_of(x) in study.ARMS for x in study.ABLATIONS)
    with pytest.raises(SystemExit, match="--ablations"):
        study.plan(argparse.Namespace(arms="noble-paper-gelu", models="vim"))


def test_downstream_scores_each_arms_best_lr_run_once_retraining_it_where_needed(tmp_path, monkeypatch):
    """--downstream: a Parti arm's run at its best LR (sweep seed) that has no score is trained again with the
    scorer; its stored entry gains the score and the retrained loss, the table shows it, and a second pass trains
    nothing. VIM has no downstream score in the study: skipped."""
    from bench.studies import noble_downstream as downstream

    entries = [entry(arm, lr, 0, [[4, loss]], model="parti")
               for arm, lr, loss in (("baseline", 1e-3, 1.9), ("baseline", 3e-3, 1.8), ("noble-paper", 1e-3, 1.85),
                                     ("noble-paper", 3e-3, 1.95))] + [entry("baseline", 1e-3, 0, [[4, 2.0]])]  # fmt: skip
    path = tmp_path / "noble_study.json"
    study.save(path, entries, False)
    trained = []

    def fake_train(model, arm, lr, seed, shards, work, a, score=None):
        trained.append((model, arm, lr, seed))
        return entry(arm, lr, seed, [[4, 1.7]], model=model) | {"downstream": score(tmp_path / "final"), "cpu": "Xeon"}

    monkeypatch.setattr(study, "train_run", fake_train)
    monkeypatch.setattr(downstream, "shapes_adherence", lambda ckpt: {"seen": 0.5, "heldout": 0.25})
    a = argparse.Namespace(steps=4, smoke=False, downstream=True)
    todo = [("parti", "baseline"), ("parti", "noble-paper"), ("vim", "baseline")]
    shards = {"parti": ([], "tok1"), "vim": ([], "tok1")}
    study.run_downstream(todo, shards, tmp_path, entries, path, [1e-3, 3e-3], 0, [0], a)
    assert trained == [("parti", "baseline", 3e-3, 0), ("parti", "noble-paper", 1e-3, 0)]  # each arm's best LR
    stored = {(e["model"], e["arm"], e["lr"]): e for e in study.load_entries(path)}
    assert stored["parti", "baseline", 3e-3]["downstream"] == {"seen": 0.5, "heldout": 0.25,
                                                               "retrained_final_val_loss": 1.7, "cpu": "Xeon"}  # fmt: skip
    assert "downstream" not in stored["parti", "baseline", 1e-3] and "downstream" not in stored["vim", "baseline", 1e-3]
    assert stored["parti", "baseline", 3e-3]["final_val_loss"] == 1.8  # the stored run's own loss is kept
    rows = report.summarize(study.load_entries(path))[1]
    assert [r[-1] for r in rows if r[0] == "parti"] == ["50.0% / 25.0% (1 seed)"] * 2
    assert [r[-1] for r in rows if r[0] == "vim"] == ["n/a"]
    study.run_downstream(todo, shards, tmp_path, study.load_entries(path), path, [1e-3, 3e-3], 0, [0], a)
    assert len(trained) == 2  # every score is in the file now


def test_the_downstream_score_grades_each_sample_against_its_own_prompt(parti_world, monkeypatch):
    """A real (micro) Parti checkpoint, sampled and graded by the real checker; a spy on the checker sees every
    prompt of both groups exactly SAMPLES times, with the picture generated for it."""
    import vimtool.data.shapes as shapes
    from bench.studies import noble_downstream as downstream

    monkeypatch.setattr(downstream, "PROMPTS", 3)
    monkeypatch.setattr(downstream, "SAMPLES", 2)
    graded = []
    real_check = shapes.check
    monkeypatch.setattr(shapes, "check", lambda image, prompt: graded.append(prompt) or real_check(image, prompt))
    score = downstream.shapes_adherence(parti_world["ckpt"])
    seen = shapes.captions(3, "val", seed=1, objects=(1,), holdout=downstream.fx.HOLDOUT)
    held = shapes.captions(3, "holdout", seed=1, objects=(1,), holdout=downstream.fx.HOLDOUT)
    assert sorted(graded) == sorted(seen * 2 + held * 2)
    assert all(abs(score[g] * 6 - round(score[g] * 6)) < 1e-9 for g in ("seen", "heldout"))  # k of 6 pictures
    assert score["prompts"] == 3 and score["samples_per_prompt"] == 2


def test_an_ablation_is_compared_with_its_parent_trained_on_the_same_cpu():
    """The same run on two CPUs can end apart like two seeds: an ablation is set against the parent run from its own
    CPU (the stored one, or its --downstream retrain) and says when it could not be; the retrain's move is a note."""
    parent = [entry("noble-paper", 1e-3, s, [[4, loss]]) | {"cpu": "EPYC"} for s, loss in ((0, 2.00), (1, 2.02),
                                                                                            (2, 2.04))]  # fmt: skip
    parent[0]["downstream"] = {"seen": 0.5, "heldout": 0.2, "retrained_final_val_loss": 2.03, "cpu": "Xeon"}
    ablation = entry("noble-paper-r16", 1e-3, 0, [[4, 2.035]]) | {"cpu": "Xeon"}
    notes = report.summarize(parent + [ablation])[2]
    r16 = next(n for n in notes if "ablation noble-paper-r16" in n)
    assert "on the same CPU" in r16 and "+0.0050" in r16 and "within" in r16, r16  # 2.035 - 2.03, not - 2.00
    moved = next(n for n in notes if "trained again on Xeon" in n)
    assert "2.0000 on EPYC" in moved and "(+0.0300)" in moved, moved
    elsewhere = report.summarize(parent + [ablation | {"cpu": "Other"}])[2]
    r16 = next(n for n in elsewhere if "ablation noble-paper-r16" in n)
    assert "on another or an unrecorded CPU" in r16 and "+0.0350" in r16, r16  # the stored run, said plainly
