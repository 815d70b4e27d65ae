"""Dataset clip indexes on the real MA-52 lists and JHMDB pickles, and errors on malformed lists."""

from __future__ import annotations

import csv
import pickle
import shutil

import numpy as np
import pytest

from conftest import SHARED, requires_shared, run_cli
from pipelines.data import datasets
from pipelines.errors import InputError

pytestmark = requires_shared
MA52 = SHARED / "ma52" / "annotations"
JHMDB = SHARED / "jhmdb"


def test_ma52_official_lists():
    index = datasets.ma52(MA52)
    # test_list_videos.txt holds 5,586 entries (test0000..test5585; its last line has no newline, so `wc -l`
    # says 5,585): 11,250 + 5,586 + 5,586 = 22,422, MA-52's clip count.
    assert {s: len(index.split(s)) for s in index.splits} == {"train": 11250, "val": 5586, "test": 5586}
    assert len(index.classes) == 52 and index.classes[9] == "nodding"
    assert all(c.label is None and c.coarse is None for c in index.split("test"))
    with open(MA52 / "fine_to_coarse.tsv", newline="") as f:
        truth = {int(r["fine_id"]): int(r["coarse_id"]) for r in csv.DictReader(f, delimiter="\t")}
    labelled = [c for c in index.clips if c.label is not None]
    assert all(c.coarse == truth[c.label] for c in labelled)
    assert len({c.label for c in labelled}) == 52 and len(index.coarse_classes) == 7
    counts = index.counts()
    assert counts.loc["turning around", "train"] == 9 and counts.loc["nodding", "train"] == 1283
    # the official val shares all participants with train, which is why a subject-disjoint protocol exists
    assert {c.subject for c in index.split("train")} == {c.subject for c in index.split("val")}


def test_ma52_subject_disjoint_protocol():
    index = datasets.ma52(MA52, protocol="subject")
    train, val = ({c.subject for c in index.split(s)} for s in ("train", "val"))
    assert train and val and not train & val
    assert len(index.split("train")) + len(index.split("val")) == 11250 + 5586
    assert 0.2 < len(index.split("val")) / 16836 < 0.45
    assert index.frame().equals(datasets.ma52(MA52, protocol="subject").frame())  # stable


def test_jhmdb_three_splits():
    for split in (1, 2, 3):
        index = datasets.jhmdb(JHMDB, split)
        sizes = (len(index.split("train")), len(index.split("test")))
        assert sizes in ((433, 176), (434, 175)) and len(index.classes) == 14


@pytest.mark.parametrize("line, problem", [
    ("0003_01_0001.mp4 nine", "label 'nine' is not an integer"),
    ("0003_01_0001.mp4 52", "label 52 is outside the 52 classes"),
    ("0003_01_0001.mp4", "expected '<video>.mp4 <label>'"),
])
def test_malformed_ma52_list_names_file_and_line(tmp_path, line, problem):
    for f in MA52.iterdir():
        shutil.copy(f, tmp_path / f.name)
    train = tmp_path / "train_list_videos.txt"
    lines = train.read_text().splitlines()
    lines[41] = line
    train.write_text("\n".join(lines))
    with pytest.raises(InputError) as err:
        datasets.ma52(tmp_path)
    assert str(err.value).startswith(f"{train}:42: ") and problem in str(err.value)
    result = run_cli("datasets", "show", "ma52", str(tmp_path))
    assert result.returncode == 2 and f"{train}:42" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_imigue_segments_and_cross_subject_split(tmp_path):
    path = tmp_path / "segments.csv"
    rows = [("v1", 3, 0, 40, "s1"), ("v1", 5, 50, 90, "s1"), ("v2", 3, 10, 30, "s2"), ("v3", 0, 5, 25, "s3")]
    path.write_text("video_id,label_id,start_time,start_frame,end_time,end_frame,class,subject_id\n" + "".join(
        f"{v},{lab},0,{s},0,{e},c{lab},{subj}\n" for v, lab, s, e, subj in rows))
    index = datasets.imigue(path, class_names=SHARED / "miga" / "class_names_32.txt", test_subjects=["s2"])
    assert len(index.classes) == 32 and index.classes[0] == "turtle neck"
    assert [c.split for c in index.clips] == ["train", "train", "test", "train"]
    assert (index.clips[1].start, index.clips[1].end, index.clips[1].label) == (50, 90, 5)
    path.write_text("video_id,label_id,start_frame,end_frame,subject_id\nv1,2,40,10,s1\n")
    with pytest.raises(InputError, match=r"segments.csv:2: end_frame 10 is not after start_frame 40"):
        datasets.imigue(path)


def test_generic_csv_and_pyskl_splits(tmp_path):
    path = tmp_path / "clips.csv"
    path.write_text("path,label,split,start,end,subject\na.mp4,wave,train,,,p1\nb.mp4,clap,test,5,20,p2\n")
    index = datasets.generic_csv(path)
    assert index.classes == ["clap", "wave"] and [c.label for c in index.clips] == [1, 0]
    assert index.clips[1].clip_id == "b_5_20" and index.clips[1].source == str(tmp_path / "b.mp4")

    ann = [{"frame_dir": f"c{i}", "label": i % 2, "keypoint": np.zeros((1, 4, 17, 2))} for i in range(3)]
    pkl = tmp_path / "poses.pkl"
    pkl.write_bytes(pickle.dumps({"split": {"xsub_train": ["c0", "c1"], "xsub_val": ["c2"]}, "annotations": ann}))
    index = datasets.pyskl(pkl)
    assert [(c.clip_id, c.split, c.label) for c in index.clips] == [
        ("c0", "xsub_train", 0), ("c1", "xsub_train", 1), ("c2", "xsub_val", 0)]
