"""A lab's own annotations as training data (issue 17): an ELAN tier or BORIS aggregated events over a real long
video -> a clip index -> `dualnet run` (cut, extract, tubes, train: tiny preset) -> `dualnet predict` -> `dualnet
agree` against the same annotations. Bad annotation files fail as one line, before anything is written."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from conftest import MA52_VIDEOS, REPO, requires_shared, run_cli
from pipelines.data.datasets import boris, elan
from pipelines.errors import InputError
from pipelines.experiment import load_config, run_config, run_predict
from pipelines.io.annotations import read_boris, read_elan
from pipelines.report.annotations import write_boris
from pipelines.stages.predict import PredictParams

pytestmark = requires_shared
CLIPS = ["B1_nodding__0019_02_0078", "B2_shaking_head__0035_02_0007", "B3_turning_head__0010_02_0101"]
LABELS = ["nodding", "shaking head", "turning head"]
TRIM = 0.2  # seconds left unannotated at both ends of every clip: annotations need not tile the video


def write_elan_file(path: Path, video: Path, tiers: dict[str, list[tuple[str, float, float]]]) -> Path:
    """An ELAN file as ELAN writes one (pympi-ling): the video linked by its relative path, a tier per entry of
    `tiers` with (value, start_s, end_s) annotations."""
    import os

    import pympi

    eaf = pympi.Elan.Eaf(author="a lab")
    eaf.remove_tier("default")
    eaf.add_linked_file(video.resolve().as_uri(), relpath=os.path.relpath(video, path.parent), mimetype="video/mp4")
    for tier, rows in tiers.items():
        eaf.add_tier(tier)
        for value, start, end in rows:
            eaf.add_annotation(tier, round(start * 1000), round(end * 1000), value)
    path.parent.mkdir(parents=True, exist_ok=True)
    eaf.to_file(str(path))
    return path


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A lab folder: videos/talk.mp4 (three sample clips back to back, half size), annotations/talk.eaf (tier
    'Behaviour': each clip's action, 0.2 s trimmed at both ends; a 'Notes' tier beside it) and boris/talk.tsv (the
    same segments as BORIS aggregated events)."""
    from test_predict import concatenate

    root = tmp_path_factory.mktemp("lab")
    video = root / "videos" / "talk.mp4"
    video.parent.mkdir()
    truth = concatenate([MA52_VIDEOS / f"{c}.mp4" for c in CLIPS], video, scale=0.5)
    segments = [(label, round(start + TRIM, 3), round(end - TRIM, 3))
                for label, (_, start, end) in zip(LABELS, truth, strict=True)]
    eaf = write_elan_file(root / "annotations" / "talk.eaf", video,
                          {"Behaviour": segments, "Notes": [("fidgets?", 0.0, truth[-1][2])]})
    timeline = pd.DataFrame(segments, columns=["label", "start_s", "end_s"]).assign(score=1.0)
    tsv = write_boris(timeline, video, truth[-1][2], 30.0, root / "boris" / "talk.tsv", subject="P01")
    return root, video, segments, eaf, tsv


def test_an_elan_tier_and_boris_events_index_the_same_clips(lab):
    root, video, segments, eaf, tsv = lab
    index = elan(eaf, "Behaviour")
    assert index.classes == sorted(LABELS) and index.splits == ["train"]  # one video: all of it trains
    frames = [(round(start * 30), round(end * 30)) for _, start, end in segments]
    assert [(index.classes[c.label], c.start, c.end) for c in index.clips] == [
        (label, a, b) for (label, _, _), (a, b) in zip(segments, frames, strict=True)]
    assert {Path(c.source) for c in index.clips} == {video} and index.clips[0].clip_id == f"talk_{frames[0][0]}_" \
        f"{frames[0][1]}"
    from_boris = boris(tsv)
    assert [(c.clip_id, c.label, c.start, c.end) for c in from_boris.clips] == [
        (c.clip_id, c.label, c.start, c.end) for c in index.clips]
    assert {c.subject for c in from_boris.clips} == {"P01"} and from_boris.classes == index.classes
    # the folder forms (every .eaf / .tsv in it) give the same index
    assert elan(eaf.parent, "Behaviour").clips == index.clips and boris(tsv.parent).clips == from_boris.clips


def test_videos_split_whole_by_a_stable_hash(lab, tmp_path):
    """Four videos at val_fraction 0.25: exactly one is val, with all its clips, and the same one every time."""
    import os

    root, video, segments, _, _ = lab
    for i in range(4):
        os.link(video, tmp_path / f"v{i}.mp4")
        write_elan_file(tmp_path / f"v{i}.eaf", tmp_path / f"v{i}.mp4", {"Behaviour": segments})
    index = elan(tmp_path, "Behaviour")
    by_video = {Path(c.source).name: {x.split for x in index.clips if x.source == c.source} for c in index.clips}
    assert sorted(len(s) for s in by_video.values()) == [1, 1, 1, 1]
    assert sorted(s.pop() for s in by_video.values()) == ["train", "train", "train", "val"]
    assert elan(tmp_path, "Behaviour").clips == index.clips


def test_bad_annotations_fail_with_one_line(lab, tmp_path):
    root, video, segments, eaf, tsv = lab
    with pytest.raises(InputError, match=r"talk.eaf: no tier 'Behavior' \(tiers: 'Behaviour', 'Notes'\)"):
        elan(eaf, "Behavior")
    overlapping = write_elan_file(tmp_path / "overlap.eaf", video,
                                  {"Behaviour": [("nodding", 0.0, 1.0), ("shaking head", 0.9, 2.0)]})
    with pytest.raises(InputError, match=r"overlap.eaf: tier 'Behaviour': annotations overlap: 'nodding' at 0-1 s "
                                         r"and 'shaking head' at 0.9-2 s"):
        elan(overlapping, "Behaviour")
    zero = write_elan_file(tmp_path / "zero.eaf", video, {"Behaviour": [("nodding", 0.5, 1.0)]})
    zero.write_text(zero.read_text().replace('TIME_VALUE="1000"', 'TIME_VALUE="500"'))  # pympi refuses to write one
    with pytest.raises(InputError, match=r"zero.eaf: tier 'Behaviour': annotation 'nodding' at 0.5-0.5 s has zero "
                                         "length"):
        read_elan(zero, "Behaviour")
    elsewhere = tmp_path / "moved" / "talk.eaf"
    elsewhere.parent.mkdir()
    elsewhere.write_text(eaf.read_text().replace(str(video.resolve()), "/nowhere/talk.mp4"))
    with pytest.raises(InputError, match=r"moved/talk.eaf: media '../videos/talk.mp4' not found"):
        elan(elsewhere, "Behaviour")
    assert elan(elsewhere, "Behaviour", video_root=video.parent).clips == elan(eaf, "Behaviour").clips
    table = pd.read_csv(tsv, sep="\t")
    table.loc[1, "Start (s)"] = table.loc[0, "Stop (s)"] - 0.5
    table.to_csv(tmp_path / "overlap.tsv", sep="\t", index=False)
    with pytest.raises(InputError, match=r"overlap.tsv: media 'talk.mp4', subject 'P01': annotations overlap"):
        read_boris(tmp_path / "overlap.tsv")
    table = pd.read_csv(tsv, sep="\t")
    table.loc[2, "Stop (s)"] = table.loc[2, "Start (s)"]
    table.to_csv(tmp_path / "zero.tsv", sep="\t", index=False)
    with pytest.raises(InputError, match=r"zero.tsv: .*'turning head' at .* has zero length"):
        boris(tmp_path / "zero.tsv")
    # the CLI: one line, exit 2; `dualnet run` writes nothing (no cut clip, no store) before failing
    result = run_cli("datasets", "show", "elan", str(eaf), "--tier", "Behavior")
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "no tier 'Behavior'" in result.stderr
    store = tmp_path / "store"
    result = run_cli("run", "configs/lab.toml", "--root", str(root), "--store", str(store), "--set",
                     "dataset.tier=Behavior")
    assert result.returncode == 2 and "no tier 'Behavior'" in result.stderr and "Traceback" not in result.stderr
    assert not store.exists()


def test_datasets_show_counts_the_annotated_clips(lab):
    root, _, _, eaf, tsv = lab
    for args in (["elan", str(eaf), "--tier", "Behaviour"], ["boris", str(tsv)]):
        result = run_cli("datasets", "show", *args)
        assert result.returncode == 0, result.stderr
        assert f"{args[0]}: 3 clips, 3 classes" in " ".join(result.stdout.split())  # the title wraps
        rows = {line.split("│")[1].strip(): line.split("│")[2].strip() for line in result.stdout.splitlines()
                if line.count("│") == 3}
        assert rows == {"nodding": "1", "shaking head": "1", "turning head": "1", "total": "3"}
        assert any("class" in line and line.split()[-2:] == ["train", "┃"] for line in result.stdout.splitlines())


def test_annotations_train_a_model_that_predicts_and_is_scored_against_them(lab, tmp_path):
    """The acceptance path: annotations -> dataset -> `dualnet run` (cut, extract, tubes, train; tiny, 2 epochs)
    -> `dualnet predict` on the long video -> `dualnet agree` with the same annotations."""
    root, video, segments, eaf, _ = lab
    store = tmp_path / "store"
    # in process: the CLI's `run` is the bad-input test's, and each `python -m cli` costs ~3 s of imports
    overrides = ["model.preset='tiny'", "train.epochs=2", "train.batch_size=3", "train.val_split=''"]
    report = run_config(load_config(REPO / "configs" / "lab.toml", overrides), root, store,
                        ["cut", "extract", "tubes", "train"])
    lines = "\n".join(report.lines)
    assert "cut: 3 segment clip(s)" in lines and "3 processed, 0 skipped, 0 failed" in lines, lines
    assert "trained 2 epoch(s)" in lines, lines
    from pipelines.io.video import probe

    cut = {p.stem: probe(p).declared_frames for p in (store / "clips" / "elan").glob("*.mp4")}
    assert cut == {f"talk_{round(s * 30)}_{round(e * 30)}": round(e * 30) - round(s * 30) for _, s, e in segments}
    out = tmp_path / "predicted"
    (prediction,) = run_predict([str(video)], report.checkpoint, store, PredictParams(window=1.0, stride=0.5), out,
                                plot=False).videos
    timeline = pd.read_csv(out / "talk" / "timeline.csv")
    assert set(timeline["label"]) <= {*LABELS, "(nobody)"} and len(timeline) >= 1
    assert timeline["end_s"].max() == pytest.approx(142 / 30) and prediction.duration_s == pytest.approx(142 / 30)
    page = (out / "talk" / "review.html").read_text()  # predict's review page: the predicted track alone
    src = page.split('<video id="video"')[1].split('src="')[1].split('"')[0]
    assert not Path(src).is_absolute() and (out / "talk" / src).resolve() == video.resolve()
    assert page.count('class="seg"') == len(timeline) and 'id="track-annotated"' not in page
    result = run_cli("agree", str(out / "talk"), str(eaf), "--tier", "Behaviour", "--bin", "0.1")
    assert result.returncode == 0, result.stderr
    assert "review page (both tracks)" in result.stdout
    page = (out / "talk" / "review.html").read_text()
    assert page.split('id="track-annotated"')[1].count('class="seg"') == 3
    table = pd.read_csv(out / "talk" / "agreement.csv").set_index("label")
    assert table.loc[LABELS, "annotated"].tolist() == [1, 1, 1]
    assert table.loc[LABELS, "annotated_s"].round(3).tolist() == [round(e - s, 3) for _, s, e in segments]
    predicted = timeline[timeline["label"] != "(nobody)"]
    for label in LABELS:
        assert table.loc[label, "predicted"] == (predicted["label"] == label).sum()
    for label, mean in predicted.groupby("label")["score"].mean().items():  # agree's page keeps the scores
        row = page.split(f"{label}</td>")[1].split("</tr>")[0]
        assert f"<td>{mean:.2f}</td>" in row, (label, row)
    kappa = json.loads((out / "talk" / "agreement.json").read_text())
    assert kappa["bins"] == 48 and -1 <= kappa["kappa"] <= 1 and "kappa" in result.stdout
