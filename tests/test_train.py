"""Training and evaluation on the real MA-52 sample tubes (tiny preset, CPU): sampling, a full run, reuse, resume
after SIGKILL to the same end, and the report."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import dualnet
from conftest import MA52_VIDEOS, REPO, requires_shared, run_cli
from pipelines.data.clips import LabelledClips, augment, segment_indices
from pipelines.formats.checkpoints import load_model
from pipelines.formats.params import TrainParams
from pipelines.formats.tube_packs import TubeSet
from pipelines.stages.train import run_key, train
from train_cases import exact_config, exact_params, five_clips, six_clips

pytestmark = requires_shared
EPOCHS = 6


@given(st.integers(1, 64), st.integers(1, 16), st.integers(0, 2**32 - 1))
def test_segment_indices_in_range_and_ordered(available, count, seed):
    for train_mode in (True, False):
        idx = segment_indices(available, count, train_mode, np.random.default_rng(seed))
        assert len(idx) == count and idx.min() >= 0 and idx.max() < available
        assert (np.diff(idx) >= 0).all()
    assert segment_indices(16, 8, False).tolist() == [1, 3, 5, 7, 9, 11, 13, 15]


@pytest.fixture(scope="module")
def demo_csv(tmp_path_factory):
    """The 6 sample clips labelled by their MA-52 code (A1..B3), in both a train and a val split."""
    path = tmp_path_factory.mktemp("data") / "clips.csv"
    rows = ["path,label,split"]
    for video in sorted(MA52_VIDEOS.glob("*.mp4")):
        rows += [f"{video},{video.name[:2]},train", f"{video},{video.name[:2]},val"]
    path.write_text("\n".join(rows) + "\n")
    return path


def _clips(tubes: TubeSet) -> LabelledClips:
    names = tuple(tubes.names())
    return LabelledClips(names, tuple(range(len(names))))


@torch.no_grad()
def _top1(checkpoint: Path, tubes: TubeSet, clips: LabelledClips) -> float:
    """Top-1 of a checkpoint's model on `clips`, counted here clip by clip (argmax of the logits, the lower class
    first on a tie), apart from `predict` and `evaluate`."""
    from pipelines.data.clips import ClipDataset, model_inputs

    model = load_model(checkpoint).eval()
    data = ClipDataset(tubes, clips, model.config, TrainParams(), train=False)
    hits = [int(model(**{k: v.unsqueeze(0) for k, v in model_inputs(data[i]).items()}).logits[0].argmax()) == label
            for i, label in enumerate(clips.labels)]
    return sum(hits) / len(hits)


def _by_code(tubes: TubeSet, checkpoint: Path) -> LabelledClips:
    """The 6 sample clips labelled by their MA-52 code, numbered as the checkpoint's classes."""
    classes = torch.load(checkpoint, map_location="cpu", weights_only=False)["classes"]
    names = tuple(sorted(tubes.names()))
    return LabelledClips(names, tuple(classes.index(n[:2]) for n in names))


def test_train_then_reuse(ma52_tubes, tmp_path):
    shutil.copytree(ma52_tubes.store.root, tmp_path / "store")
    tubes = TubeSet(tmp_path / "store")
    config = dualnet.preset("tiny", num_classes=6)
    params = TrainParams(epochs=3, batch_size=3, lr=3e-3)
    # a run killed after writing its first epoch's line but before that epoch's checkpoint (found by the crash
    # fuzzer): the epoch is redone, and its stale line must not stay in the history
    run_dir = tmp_path / "store" / "train" / run_key(config, params, tubes, _clips(tubes), _clips(tubes))
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.jsonl").write_text(json.dumps({"epoch": 0, "train_loss": 9.9}) + "\n")
    result = train(config, tubes, _clips(tubes), _clips(tubes), params)
    assert result.epochs_run == 3 and len(result.history) == 3 and not result.reused
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in lines] == [0, 1, 2] and lines[0]["train_loss"] != 9.9
    assert all(np.isfinite(h["train_loss"]) for h in result.history)
    top1 = [h["val_top1"] for h in result.history]
    assert top1[-1] == pytest.approx(_top1(run_dir / "last.pt", tubes, _clips(tubes)))  # the last epoch's weights
    best = torch.load(run_dir / "best.pt", map_location="cpu", weights_only=False)
    assert best["epoch"] == top1.index(max(top1))  # the first epoch at the best validation Top-1
    assert max(top1) == pytest.approx(_top1(run_dir / "best.pt", tubes, _clips(tubes)))
    assert {"last.pt", "best.pt", "metrics.jsonl", "done.json"} <= {p.name for p in result.run_dir.iterdir()}
    again = train(config, tubes, _clips(tubes), _clips(tubes), params)
    assert again.reused and again.epochs_run == 0 and again.history == result.history
    model = load_model(result.run_dir / "best.pt")
    assert isinstance(model, dualnet.MicroDualNet) and model.config == config


def _train_cmd(store, csv) -> list[str]:
    return [sys.executable, "-m", "cli", "train", "--dataset", "csv", "--root", str(csv), "--store", str(store),
            "--preset", "tiny", "--epochs", str(EPOCHS), "--batch-size", "3", "--lr", "0.003"]


def test_eval_writes_every_report_section(ma52_tubes, demo_csv, tmp_path):
    shutil.copytree(ma52_tubes.store.root, tmp_path / "store")
    trained = run_cli("train", "--dataset", "csv", "--root", str(demo_csv), "--store", str(tmp_path / "store"),
                      "--preset", "tiny", "--epochs", "2", "--batch-size", "3")
    assert trained.returncode == 0, trained.stderr
    result = run_cli("eval", "--dataset", "csv", "--root", str(demo_csv), "--store", str(tmp_path / "store"))
    assert result.returncode == 0, result.stderr
    report = result.stdout.strip().splitlines()[-1]
    html = open(report).read()
    for section in ("Metrics", "Training curves", "Confusion matrix", "Per-class F1", "Routing: ST vs TS",
                    "Per-class precision / recall / F1"):
        assert section in html, section
    assert html.count("data:image/png;base64,") == 4
    metrics = json.loads(open(report.replace("report.html", "metrics.json")).read())
    assert {"top1", "top5", "f1_micro", "f1_macro"} <= set(metrics)
    best = next((tmp_path / "store" / "train").glob("*/best.pt"))
    tubes = TubeSet(tmp_path / "store")
    assert metrics["top1"] == pytest.approx(_top1(best, tubes, _by_code(tubes, best)))
    assert metrics["f1_micro"] == pytest.approx(metrics["top1"])  # one label a clip: micro-F1 is accuracy
    missing = run_cli("eval", "--dataset", "csv", "--root", str(demo_csv), "--store", str(tmp_path / "store"),
                      "--checkpoint", str(tmp_path / "nope.pt"))
    assert missing.returncode == 2 and "nope.pt: checkpoint not found" in missing.stderr


def test_eval_matches_classes_by_name_and_keeps_every_report(ma52_tubes, demo_csv, tmp_path):
    """Issue 15.4: renamed classes are refused (not 0% with exit 0); the same classes in another order are
    remapped by name (same metrics); without --checkpoint eval never takes a run trained on other classes; each
    eval writes a report folder of its own."""
    from pipelines.stages.evaluate import run_eval

    store = tmp_path / "store"
    shutil.copytree(ma52_tubes.store.root, store)
    assert run_cli("train", "--dataset", "csv", "--root", str(demo_csv), "--store", str(store), "--preset",
                   "tiny", "--epochs", "2", "--batch-size", "3").returncode == 0
    six = next((store / "train").glob("*/best.pt"))
    renamed = tmp_path / "renamed.csv"
    renamed.write_text(demo_csv.read_text().replace(",A", ",X").replace(",B", ",Y"))
    wrong = run_cli("eval", "--dataset", "csv", "--root", str(renamed), "--store", str(store), "--checkpoint",
                    str(six))
    assert wrong.returncode == 2 and "do not match" in wrong.stderr and str(six) in wrong.stderr
    assert len(wrong.stderr.strip().splitlines()) == 1 and "Traceback" not in wrong.stderr

    # another dataset's run becomes the latest; eval of the 6-class set still takes the run trained on it
    three = tmp_path / "three.csv"
    three.write_text("\n".join(line for line in demo_csv.read_text().splitlines()
                               if not line.startswith(str(MA52_VIDEOS)) or "/A" in line) + "\n")
    assert run_cli("train", "--dataset", "csv", "--root", str(three), "--store", str(store), "--preset", "tiny",
                   "--epochs", "1", "--batch-size", "3").returncode == 0
    reports = []
    for _ in range(2):
        result = run_cli("eval", "--dataset", "csv", "--root", str(demo_csv), "--store", str(store))
        assert result.returncode == 0, result.stderr
        assert f"checkpoint: {six}" in result.stdout
        reports.append(Path(result.stdout.strip().splitlines()[-1]))
    assert reports[0] != reports[1] and all(r.is_file() for r in reports)  # the first report is kept

    # the same classes listed in another order: scores are remapped by name, metrics unchanged
    tubes = TubeSet(store)
    classes = ["A1", "A2", "A3", "B1", "B2", "B3"]
    names = tuple(sorted(tubes.names()))
    labels = tuple(classes.index(n[:2]) for n in names)
    plain = run_eval(six, tubes, LabelledClips(names, labels), classes, tmp_path / "plain")
    order = classes[::-1]
    turned = run_eval(six, tubes, LabelledClips(names, tuple(order.index(n[:2]) for n in names)), order,
                      tmp_path / "turned")
    assert turned.metrics == plain.metrics and plain.notes == [] and "remapped by name" in turned.notes[0]


def test_train_refuses_a_split_with_missing_clips_unless_allowed(ma52_tubes, demo_csv, tmp_path):
    """Issue 15.5: clips without tubes are not dropped silently: how many were used is said, and over 1% missing
    is refused unless --allow-missing."""
    store = tmp_path / "store"
    shutil.copytree(ma52_tubes.store.root, store)
    gaps = tmp_path / "gaps.csv"
    gaps.write_text(demo_csv.read_text() + "".join(f"{tmp_path}/never_extracted_{i}.mp4,A1,train\n"
                                                   for i in range(2)))
    cmd = ["train", "--dataset", "csv", "--root", str(gaps), "--store", str(store), "--preset", "tiny",
           "--epochs", "1", "--batch-size", "3"]
    refused = run_cli(*cmd)
    assert refused.returncode == 2 and not (store / "train").exists()
    assert f"{gaps}: split 'train': 6 of 8 clips have cached inputs (2 missing" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    allowed = run_cli(*cmd, "--allow-missing")
    assert allowed.returncode == 0, allowed.stderr
    assert "split 'train': 6 of 8 clips have cached inputs (2 missing" in allowed.stdout
    assert "split 'val': 6 of 6 clips have cached inputs" in allowed.stdout


def test_torchrun_two_processes_gloo_gives_a_loadable_checkpoint(ma52_tubes, demo_csv, tmp_path):
    shutil.copytree(ma52_tubes.store.root, tmp_path / "store")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "cli",
           "train", "--dataset", "csv", "--root", str(demo_csv), "--store", str(tmp_path / "store"), "--preset",
           "tiny", "--epochs", "2", "--batch-size", "2", "--accumulate", "2", "--optimizer", "sgd", "--workers", "1"]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    runs = list((tmp_path / "store" / "train").glob("*/done.json"))
    assert len(runs) == 1
    lines = (runs[0].parent / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2  # one writer: rank 0
    best = runs[0].parent / "best.pt"
    state = torch.load(best, map_location="cpu", weights_only=False)
    assert state["params"]["optimizer"] == "sgd" and state["params"]["accumulate"] == 2
    assert all("momentum_buffer" in s for s in state["optimizer"]["state"].values())
    # each process takes 3 of the 6 clips as micro-batches of 2 and 1 (the first under no_sync): one step an epoch
    assert state["scheduler"]["last_epoch"] == state["epoch"] + 1
    # a plain single-process model (no DDP prefixes) with the weights rank 0 validated
    top1 = json.loads(lines[state["epoch"]])["val_top1"]
    assert top1 == pytest.approx(_top1(best, TubeSet(tmp_path / "store"), _by_code(ma52_tubes, best)))


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "last.pt", map_location="cpu", weights_only=False)["model"]


def _history(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _assert_same_run(a: Path, b: Path) -> None:
    """Two runs end with the same weights (to float32 summation order) and the same per-epoch records."""
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        torch.testing.assert_close(wa[name], wb[name], rtol=1e-5, atol=1e-6, msg=lambda m, n=name: f"{n}: {m}")
    ha, hb = _history(a), _history(b)
    assert [h["epoch"] for h in ha] == [h["epoch"] for h in hb]
    for x, y in zip(ha, hb, strict=True):
        assert x["train_loss"] == pytest.approx(y["train_loss"], rel=1e-6) and x["lr"] == pytest.approx(y["lr"])
        assert {k: v for k, v in x.items() if k.startswith("val_")} == pytest.approx(
            {k: v for k, v in y.items() if k.startswith("val_")}, abs=1e-6)


@pytest.mark.parametrize("balance", ["reweight", "sample"])
def test_torchrun_two_processes_train_as_one_process(ma52_tubes, tmp_path, balance):
    """Issue 18: 2 processes at batch 2 are 1 process at batch 4, step for step: the same clips per step, each
    once per epoch (5 clips: the last step's one clip is not padded with a repeat, the second process joins the
    all-reduce with a zero-weight filler), the step's loss the class-weighted mean over all its clips, and the
    epoch's record over every process's clips. Final weights and every metrics.jsonl value agree. Class-balanced
    draws too (issue 18.5: they were refused under torchrun, whose DistributedSampler drew plain shares): every
    process draws the same order."""
    store = tmp_path / "store"
    shutil.copytree(ma52_tubes.store.root, store)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(REPO / "tests" / "torchrun_train.py"), str(store), "2", balance]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr[-3000:]
    tubes = TubeSet(store)
    two = store / "train" / run_key(exact_config(), exact_params(batch_size=2, balance=balance), tubes,
                                    five_clips(tubes), six_clips(tubes))
    one = train(exact_config(), tubes, five_clips(tubes), six_clips(tubes), exact_params(batch_size=4,
                                                                                       balance=balance))
    assert (two / "done.json").is_file() and one.run_dir != two
    assert len(_history(two)) == 2
    _assert_same_run(one.run_dir, two)


def test_accumulated_micro_batches_train_as_one_batch(ma52_tubes, tmp_path):
    """--accumulate 2 at batch 2 is batch 4: the same clips per step and the same step, counted once (5 clips: the
    last step is one micro-batch of one clip, which is the whole step, not half of one)."""
    tubes = ma52_tubes
    accumulated = train(exact_config(), tubes, five_clips(tubes), six_clips(tubes),
                        exact_params(batch_size=2, accumulate=2), store=tmp_path / "accumulated")
    whole = train(exact_config(), tubes, five_clips(tubes), six_clips(tubes), exact_params(batch_size=4),
                  store=tmp_path / "whole")
    _assert_same_run(accumulated.run_dir, whole.run_dir)
    state = torch.load(accumulated.run_dir / "last.pt", map_location="cpu", weights_only=False)
    assert state["scheduler"]["last_epoch"] == 2 * 2  # optimizer steps: 2 epochs of ceil(5 / (2 x 2))


def test_sgd_takes_a_nesterov_momentum_step(ma52_tubes, tmp_path):
    """--optimizer sgd is SGD with Nesterov momentum 0.9: one step of all 6 clips moves each weight by
    -lr x (1 + 0.9) x (gradient + weight decay x weight), the gradient computed here on the same clips, and the
    checkpoint holds each weight's momentum buffer (gradient + decay, the first step's)."""
    from torch.utils.data import default_collate

    from dualnet.losses import class_weights
    from dualnet.model import MicroDualNet
    from pipelines.data.clips import ClipDataset, model_inputs

    tubes, config, clips = ma52_tubes, exact_config(), six_clips(ma52_tubes)
    params = exact_params(epochs=1, batch_size=6)  # one step, whose warm-up factor is 1: lr at its peak
    result = train(config, tubes, clips, None, params, store=tmp_path / "store")
    state = torch.load(result.run_dir / "last.pt", map_location="cpu", weights_only=False)

    torch.manual_seed(params.seed)
    model = MicroDualNet(config)  # the run's start
    data = ClipDataset(tubes, clips, config, params, train=True)  # epoch 0: the clips as the run drew them
    batch = augment(default_collate([data[i] for i in range(len(data))]))
    weights = torch.tensor(class_weights(np.bincount(clips.labels, minlength=3)), dtype=torch.float32)
    loss, _ = model.loss(model(**model_inputs(batch), labels=batch["label"]), batch["label"], None, weights)
    loss.backward()
    groups = model.parameter_groups(params.lr, params.weight_decay)
    decay = {id(p): group["weight_decay"] for group in groups for p in group["params"]}
    saved = state["optimizer"]
    assert all(g["momentum"] == 0.9 and g["nesterov"] and g["lr"] == params.lr for g in saved["param_groups"])
    indices = [i for group in saved["param_groups"] for i in group["params"]]  # the checkpoint numbers weights
    for i, p in zip(indices, [p for group in groups for p in group["params"]], strict=True):  # in group order
        torch.testing.assert_close(saved["state"][i]["momentum_buffer"], p.grad + decay[id(p)] * p.detach())
    for name, p in model.named_parameters():
        step = p.grad + decay[id(p)] * p.detach()
        torch.testing.assert_close(state["model"][name], p.detach() - params.lr * 1.9 * step,
                                   msg=lambda m, n=name: f"{n}: {m}")


def test_loader_workers_give_the_same_run(ma52_tubes, tmp_path, monkeypatch):
    """--workers 2 loads clips in 2 worker processes and trains the same run as loading in the main process: a
    clip's random draws are seeded by (seed, epoch, index), not by the process that loads it."""
    import pipelines.stages.train as stage

    made = []

    class Recording(stage.DataLoader):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self.num_workers)

    monkeypatch.setattr(stage, "DataLoader", Recording)
    tubes = ma52_tubes
    runs = [train(exact_config(), tubes, five_clips(tubes), six_clips(tubes), exact_params(batch_size=2),
                  store=tmp_path / str(workers), num_workers=workers).run_dir for workers in (0, 2)]
    assert made == [0] * 3 + [2] * 3  # validation, then one loader per epoch
    _assert_same_run(*runs)


def test_augmentations_are_deterministic_and_keep_shapes(ma52_tubes):
    from torch.utils.data import default_collate

    from pipelines.data.clips import ClipDataset

    config = dualnet.preset("tiny", num_classes=6)
    data = ClipDataset(ma52_tubes, _clips(ma52_tubes), config, TrainParams(flip=0.5, crop_jitter=0.2,
                                                                           colour_jitter=0.3), train=True)
    plain = ClipDataset(ma52_tubes, _clips(ma52_tubes), config, TrainParams(), train=False)

    def augmented(dataset, i):
        return augment(default_collate([dataset[i]]))

    a, b = augmented(data, 0), augmented(data, 0)
    keys = {"tubes", "frames", "frame_boxes", "keypoints", "boxes", "visible", "label"}
    assert set(a) == keys  # the jitter was applied, dropped
    for key in ("tubes", "frames", "keypoints", "boxes"):
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, equal_nan=True)  # same (seed, epoch, index)
    assert a["tubes"].shape == (1, *plain[0]["tubes"].shape) and a["tubes"].dtype == torch.uint8
    assert not torch.equal(a["tubes"][0], plain[0]["tubes"])
    assert not torch.equal(a["frames"][0], plain[0]["frames"])
    data.epoch = 1
    assert not torch.equal(augmented(data, 0)["tubes"], a["tubes"])  # a new epoch draws new augmentations
    assert set(plain[0]) == keys  # evaluation: none to apply


def test_ma52_layout_train_eval_and_hidden_label_submission(ma52_tubes, tmp_path):
    """The MA-52 path end to end on the sample clips: official-format lists, coarse labels and F1_mean, and the
    test-server CSV for a split whose labels are hidden."""
    from conftest import SHARED

    shutil.copytree(ma52_tubes.store.root, tmp_path / "store")
    ann = tmp_path / "annotations"
    ann.mkdir()
    for name in ("label_name.txt", "fine_to_coarse.tsv"):
        shutil.copy(SHARED / "ma52" / "annotations" / name, ann / name)
    fine = {"A1": 0, "A2": 3, "A3": 1, "B1": 9, "B2": 10, "B3": 8}
    videos = sorted(MA52_VIDEOS.glob("*.mp4"))
    lines = [f"{v.name} {fine[v.name[:2]]}" for v in videos]
    (ann / "train_list_videos.txt").write_text("\n".join(lines) + "\n")
    (ann / "val_list_videos.txt").write_text("\n".join(lines) + "\n")
    (ann / "test_list_videos.txt").write_text("\n".join(f"{v.name} 0" for v in videos))
    common = ["--dataset", "ma52", "--root", str(ann), "--store", str(tmp_path / "store")]
    trained = run_cli("train", *common, "--preset", "tiny", "--epochs", "2", "--batch-size", "3")
    assert trained.returncode == 0, trained.stderr
    evaluated = run_cli("eval", *common)
    assert evaluated.returncode == 0, evaluated.stderr
    for key in ("f1_mean", "coarse_top1", "coarse_f1_macro"):
        assert key in evaluated.stdout
    submitted = run_cli("eval", *common, "--split", "test", "--submission")
    assert submitted.returncode == 0, submitted.stderr
    from pipelines.report.metrics import read_submission

    csv_path = submitted.stdout.strip().split("submission -> ")[-1].strip()
    rows = read_submission(csv_path)
    assert rows["vid"].tolist() == [v.name for v in videos]
    assert rows[[f"body_pred_{i}" for i in range(1, 6)]].to_numpy().max() <= 6

    # Issue 18.3: the real test list (5,586 videos) with only the 6 sample clips cached: a submission missing
    # 5,586 rows is refused, even with --allow-missing
    real = (SHARED / "ma52" / "annotations" / "test_list_videos.txt").read_text()
    assert len(real.splitlines()) == 5586
    (ann / "test_list_videos.txt").write_text(real.rstrip("\n") + "\n" + "\n".join(f"{v.name} 0" for v in videos))
    for extra in ([], ["--allow-missing"]):
        partial = run_cli("eval", *common, "--split", "test", "--submission", *extra)
        assert partial.returncode == 2, partial.stdout
        assert "split 'test': 6 of 5592 clips have cached inputs (5586 missing" in partial.stderr
