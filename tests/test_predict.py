"""`dualnet predict`: windows over a long real video -> segments, summaries, re-use, bounded memory, bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pytest

import dualnet
from conftest import MA52_VIDEOS, ma52_clips, requires_shared, run_cli
from helpers import cli, traced_run
from pipelines.data.clips import LabelledClips
from pipelines.errors import InputError
from pipelines.experiment import run_predict
from pipelines.formats.checkpoints import Predictor
from pipelines.formats.params import TrainParams, TubeParams
from pipelines.formats.tube_packs import TubeSet
from pipelines.stages.extract import run_extract
from pipelines.stages.predict import (
    MIN_SUBJECT,
    NO_SUBJECT,
    PredictParams,
    merge_segments,
    plan_windows,
    summarize,
    summarize_people,
    window_spans,
)
from pipelines.stages.train import train
from pipelines.stages.tubes import run_tubes
from pipelines.store import Store
from pipelines.store.stage_run import manifest_key

pytestmark = requires_shared


def concatenate(clips: list[Path], dst: Path, scale: float = 1.0) -> list[tuple[str, float, float]]:
    """Write the clips one after the other into one H.264 video, losslessly at scale 1 (the decoded YUV frames go
    back in unchanged: a tiny model trained on 6 clips is not robust to re-compression); returns (clip stem,
    start_s, end_s) each."""
    truth, t = [], 0
    with av.open(str(dst), "w") as out:
        stream = None
        for clip in clips:
            with av.open(str(clip)) as src:
                n0 = t
                for frame in src.decode(video=0):
                    if stream is None:
                        stream = out.add_stream("libx264", rate=30)
                        stream.width = int(frame.width * scale) // 2 * 2
                        stream.height = int(frame.height * scale) // 2 * 2
                        stream.pix_fmt = "yuv420p"
                        stream.options = {"qp": "0", "preset": "ultrafast"}
                        source = src.streams.video[0].codec_context  # keep BT.709 / range tags: same RGB out
                        for tag in ("color_range", "colorspace", "color_primaries", "color_trc"):
                            setattr(stream.codec_context, tag, getattr(source, tag))
                    image = frame.reformat(width=stream.width, height=stream.height, format="yuv420p")
                    image.pts = None
                    for packet in stream.encode(image):
                        out.mux(packet)
                    t += 1
            truth.append((clip.stem, n0 / 30, t / 30))
        for packet in stream.encode():
            out.mux(packet)
    return truth


@pytest.fixture(scope="module")
def trained(ma52_store, tmp_path_factory):
    """A tiny RGB+pose model trained to tell the 6 sample clips apart (each clip its own class), on 48-frame
    tubes with temporal crops: it must recognise a clip from any 1 s of it, not only from the whole clip."""
    root = tmp_path_factory.mktemp("predict_store")
    shutil.copytree(ma52_store.root, root, dirs_exist_ok=True)
    tube_params = TubeParams(frames=48)
    run_tubes(Store(root), tube_params)
    tubes = TubeSet(root, tube_params)
    names = tuple(tubes.names())
    clips = LabelledClips(names, tuple(range(len(names))))
    config = dualnet.preset("tiny", num_classes=len(names))
    params = TrainParams(epochs=30, batch_size=3, lr=3e-3, flip=0.0, crop_jitter=0.0, colour_jitter=0.0,
                         temporal_crop=0.3)
    result = train(config, tubes, clips, None, params, classes=list(names))
    return Store(root), result.run_dir / "last.pt", list(names)


@pytest.fixture(scope="module")
def concatenated(tmp_path_factory):
    folder = tmp_path_factory.mktemp("long")
    video = folder / "six_clips.mp4"
    truth = concatenate(ma52_clips(), video)
    return video, truth


def test_segments_follow_the_true_clip_boundaries(trained, concatenated, tmp_path):
    store, checkpoint, classes = trained
    video, truth = concatenated
    params = PredictParams(window=1.0, stride=0.5)
    people = tmp_path / "people.csv"
    people.write_text(f"video,person,group\n{video.name},P01,control\n")
    report = run_predict([str(video)], checkpoint, store, params, tmp_path / "out", people=people)
    assert not report.failed
    (pred,) = report.videos
    timeline = pred.timeline
    assert list(timeline["label"]) == [name for name, _, _ in truth], timeline[["label", "start_s", "end_s"]]
    for (_, start, end), seg in zip(truth, timeline.itertuples(), strict=True):
        assert abs(seg.start_s - start) <= params.stride and abs(seg.end_s - end) <= params.stride
    assert timeline["start_s"].iloc[0] == 0 and timeline["end_s"].iloc[-1] == pytest.approx(truth[-1][2])
    # the summary counts are the timeline's segments per label, and the files hold the same tables
    counts = timeline["label"].value_counts()
    assert dict(zip(pred.summary["label"], pred.summary["count"], strict=True)) == counts.to_dict()
    out = tmp_path / "out" / video.stem
    pd.testing.assert_frame_equal(pd.read_parquet(out / "timeline.parquet"), timeline)
    csv = pd.read_csv(out / "timeline.csv")
    assert list(csv["label"]) == list(timeline["label"]) and np.allclose(csv["end_s"], timeline["end_s"])
    assert (out / "timeline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    by_person = pd.read_csv(report.people)
    assert set(by_person["person"]) == {"P01"} and by_person["count"].sum() == len(timeline)
    assert np.allclose(by_person["minutes"], truth[-1][2] / 60)

    # the same video and model again: nothing is computed, the same timeline comes back
    again = run_predict([str(video)], checkpoint, store, params, tmp_path / "out2")
    assert again.videos[0].reused and again.key == report.key
    pd.testing.assert_frame_equal(again.videos[0].windows, pred.windows)
    # a threshold above every score leaves windows out of segments but changes no cached score
    strict = run_predict([str(video)], checkpoint, store, PredictParams(window=1.0, stride=0.5, min_score=1.0),
                         tmp_path / "out3")
    assert strict.videos[0].reused and strict.videos[0].timeline.empty


def with_nobody_around(clip: Path, dst: Path, empty_s: float = 2.0) -> tuple[float, float]:
    """`empty_s` seconds of an empty (black) scene, the clip, then the empty scene again, losslessly (as
    `concatenate`); returns the clip's (start_s, end_s)."""
    with av.open(str(clip)) as src:
        frames = [f.to_ndarray(format="rgb24") for f in src.decode(video=0)]
    empty = int(empty_s * 30)
    black = np.zeros_like(frames[0])
    with av.open(str(dst), "w") as out:
        stream = out.add_stream("libx264", rate=30)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        stream.options = {"qp": "0", "preset": "ultrafast"}
        for rgb in [black] * empty + frames + [black] * empty:
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return empty / 30, (empty + len(frames)) / 30


def test_windows_without_a_person_predict_nothing(trained, tmp_path):
    """Issue 15.6: where nobody is in view no action is reported; the summary says how long nobody was there."""
    store, checkpoint, _ = trained
    video = tmp_path / "empty_room.mp4"
    start, end = with_nobody_around(ma52_clips()[0], video)
    params = PredictParams(window=1.0, stride=0.5)
    (pred,) = run_predict([str(video)], checkpoint, store, params, tmp_path / "out").videos
    timeline = pred.timeline
    assert timeline["label"].iloc[0] == NO_SUBJECT and timeline["label"].iloc[-1] == NO_SUBJECT, timeline
    assert NO_SUBJECT not in set(timeline["label"].iloc[1:-1])
    acted = timeline[timeline["label"] != NO_SUBJECT]
    assert len(acted) >= 1 and acted["score"].notna().all()
    assert acted["start_s"].min() >= start - 1.0 and acted["end_s"].max() <= end + 1.0  # within a window
    nobody = timeline[timeline["label"] == NO_SUBJECT]
    assert nobody["score"].isna().all() and (nobody["label_1"].isna()).all()
    assert (pred.windows["subject"] < MIN_SUBJECT).sum() >= 4
    summary = pred.summary.set_index("label")
    assert summary.loc[NO_SUBJECT, "total_s"] == pytest.approx(nobody["duration_s"].sum())
    assert abs(summary.loc[NO_SUBJECT, "total_s"] - (pred.duration_s - (end - start))) <= 2 * params.stride


def test_gc_keeps_the_training_run_behind_a_cached_prediction(trained, tmp_path):
    """Issue 18.4: a prediction's manifest names its training run, so `gc` keeps the run (and its checkpoint)
    when a newer run becomes the current one."""
    store, checkpoint, _ = trained
    report = run_predict([str(ma52_clips()[0])], checkpoint, store, PredictParams(window=1.0, stride=0.5),
                         tmp_path / "out")
    assert not report.failed
    manifest = store.stage("predict", report.key).manifest()
    assert manifest["inputs"]["train"] == checkpoint.parent.name
    for output in store.outputs():  # issue 16: every stage's key is the hash of the manifest it wrote
        assert manifest_key(output.manifest()) == output.key, output.path
    assert {o.stage for o in store.outputs()} >= {"extract", "tubes", "train", "predict"}
    current = store.refs()
    try:
        store.set_ref("train", "a-newer-run", {})  # the run behind the prediction is no longer the current one
        doomed = store.garbage()
        assert checkpoint.parent not in doomed and store.stage("predict", report.key).path not in doomed
        assert store.stage("extract", manifest["inputs"]["extract"]).path not in doomed
    finally:
        store.set_ref("train", current["train"], {})


def test_frames_held_do_not_grow_with_the_video(trained, concatenated, tmp_path):
    from pipelines.stages import predict as predict_module

    store, checkpoint, _ = trained
    video, _ = concatenated
    held = []
    original = predict_module._WindowInputs.images

    def spy(self, frames, window, boxes, square):
        held.append(len(frames))
        return original(self, frames, window, boxes, square)

    predict_module._WindowInputs.images = spy
    try:
        run_predict([str(video)], checkpoint, store, PredictParams(window=0.8, stride=0.4), tmp_path / "out",
                    plot=False)
    finally:
        predict_module._WindowInputs.images = original
    config = dualnet.preset("tiny")
    # two overlapping windows (window = 2 strides) need at most 2 * T distinct frames at once
    assert len(held) > 10 and max(held) <= 2 * config.num_frames


def test_windows_cover_the_video_in_order():
    params = PredictParams(window=2.0, stride=0.5)
    windows = plan_windows(300, 30.0, params, 16, 8)
    assert [w.start for w in windows] == list(range(0, 241, 15))
    assert all(len(w.frames) == 8 and w.start <= w.frames[0] and w.frames[-1] < w.end for w in windows)
    spans = window_spans(windows, 300, 30.0)
    assert spans[0, 0] == 0 and spans[-1, 1] == 10.0 and np.allclose(spans[1:, 0], spans[:-1, 1])
    short = plan_windows(20, 30.0, params, 16, 8)  # shorter than a window: one window over all of it
    assert len(short) == 1 and short[0].end == 20


def test_merge_and_summary_counts():
    classes = ["a", "b"]
    scores = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.55, 0.45], [0.6, 0.4], [0.2, 0.8]])
    windows = pd.DataFrame({"start_s": np.arange(6) * 0.5, "end_s": np.arange(1, 7) * 0.5})
    windows[classes] = scores
    timeline = merge_segments(windows, classes, min_score=0.0, top_k=2)
    assert list(timeline["label"]) == ["a", "b", "a", "b"]
    assert list(timeline["windows"]) == [2, 1, 2, 1] and timeline["score"].iloc[0] == pytest.approx(0.85)
    assert list(timeline["label_2"]) == ["b", "a", "b", "a"]
    gapped = merge_segments(windows, classes, min_score=0.65)  # windows 3 and 4 fall below: a gap
    assert list(zip(gapped["label"], gapped["start_s"], gapped["end_s"], strict=True)) == [
        ("a", 0.0, 1.0), ("b", 1.0, 1.5), ("b", 2.5, 3.0)]
    summary = summarize(timeline, 120.0, "v")
    assert summary.set_index("label")["count"].to_dict() == {"a": 2, "b": 2}
    assert summary.set_index("label")["rate_per_min"].to_dict() == {"a": 1.0, "b": 1.0}
    assert summary.set_index("label")["total_s"].to_dict() == {"a": 2.0, "b": 1.0}
    second = summarize(timeline.iloc[:1], 60.0, "w")
    people = pd.DataFrame({"video": ["v", "w"], "person": ["P", "P"]})
    by_person = summarize_people(pd.concat([summary, second]), people).set_index("label")
    assert by_person.loc["a", "count"] == 3 and by_person.loc["a", "minutes"] == 3.0
    assert by_person.loc["a", "rate_per_min"] == 1.0


def test_bad_inputs_fail_with_one_line(trained, tmp_path):
    store, checkpoint, _ = trained
    broken = tmp_path / "broken.pt"
    broken.write_bytes(checkpoint.read_bytes()[:1000])
    with pytest.raises(InputError, match="broken.pt: not a dualnet checkpoint"):
        run_predict([str(ma52_clips()[0])], broken, store)
    with pytest.raises(ValueError, match="stride"):
        PredictParams(window=1.0, stride=2.0)
    not_video = tmp_path / "notes.mp4"
    not_video.write_text("not a video")
    result = run_cli("predict", str(not_video), "--checkpoint", str(checkpoint), "--store", str(store.root))
    assert result.returncode == 1
    assert f"{not_video}:" in result.stderr and "Traceback" not in result.stderr


def test_elan_and_boris_timelines_hold_the_predicted_segments(trained, tmp_path):
    """Issue 17: `--elan` / `--boris` write each video's segments where ELAN and BORIS read them, to the ms."""
    from pipelines.report.annotations import read_eaf

    store, checkpoint, _ = trained
    video = ma52_clips()[0]
    report = run_predict([str(video)], checkpoint, store, PredictParams(window=1.0, stride=0.5, elan=True,
                                                                        boris=True), tmp_path / "out")
    (prediction,) = report.videos
    segments = prediction.timeline[prediction.timeline["label"] != "(nobody)"]
    assert len(segments) >= 1
    eaf = read_eaf(prediction.files["eaf"])
    assert eaf["tier"].tolist() == segments["label"].tolist()
    assert eaf["start_s"].tolist() == [round(t, 3) for t in segments["start_s"]]
    assert eaf["end_s"].tolist() == [round(t, 3) for t in segments["end_s"]]
    boris = pd.read_csv(prediction.files["boris"], sep="\t")
    assert boris["Behavior"].tolist() == segments["label"].tolist()
    assert Path(boris["Media file"].iloc[0]).name == video.name and (boris["FPS"] == 30.0).all()


def test_a_killed_predict_resumes_with_only_the_videos_not_yet_scored(trained, tmp_path):
    """Issue 18: `dualnet predict` over three videos, SIGKILLed right after the first video's scores are committed
    (a counted kill point, not a timer), then run again: the first video's scores are read back, not computed again
    (its item file untouched, two commits in the re-run), the other two are scored, and every output equals an
    uninterrupted run's."""
    store, checkpoint, _ = trained
    videos = tmp_path / "videos"
    videos.mkdir()
    names = ["B1_nodding__0019_02_0078", "B2_shaking_head__0035_02_0007", "B3_turning_head__0010_02_0101"]
    for name in names:  # the three shortest clips (50, 45, 47 frames)
        (videos / f"{name}.mp4").symlink_to(MA52_VIDEOS / f"{name}.mp4")
    # The videos' pose is extracted once, into both stores: the runs start alike and pass the same kill points.
    base = Store(tmp_path / "base")
    run_extract([str(videos)], base, Predictor.load(checkpoint, store).extract_params, namespace="predict",
                replace_changed=True)
    for run in ("whole", "killed"):
        shutil.copytree(base.root, tmp_path / run)

    def predict(run: str, kill_at: int = 0) -> tuple[int, list[str], str]:
        return traced_run(cli("predict", str(videos), "--checkpoint", str(checkpoint), "--store", str(tmp_path / run),
                              "--window", "1.0", "--stride", "0.5", "--out", str(tmp_path / run / "out"),
                              "--no-plot"), tmp_path / "trace", kill_at)

    code, whole, stderr = predict("whole")
    assert code == 0, stderr
    assert whole.count("predict.item_committed") == 3 and not any(p.startswith("extract.") for p in whole)
    first = whole.index("predict.item_committed") + 1
    code, points, stderr = predict("killed", kill_at=first)
    assert code == -9 and points == whole[:first], stderr
    (key,) = [p.name for p in (tmp_path / "whole" / "predict").iterdir()]
    items = Store(tmp_path / "killed").stage("predict", key).items_dir
    assert sorted(p.name for p in items.iterdir()) == names[:1] and not (tmp_path / "killed" / "out").exists()
    scored = (items / names[0] / "windows.parquet").stat()

    code, resumed, stderr = predict("killed")
    assert code == 0, stderr
    assert resumed.count("predict.item_committed") == 2, resumed  # only the two videos not scored before the kill
    again = (items / names[0] / "windows.parquet").stat()
    assert (again.st_ino, again.st_mtime_ns) == (scored.st_ino, scored.st_mtime_ns)
    for name in names:
        pd.testing.assert_frame_equal(
            pd.read_parquet(items / name / "windows.parquet"),
            pd.read_parquet(tmp_path / "whole" / "predict" / key / "items" / name / "windows.parquet"),
            check_exact=True)
        for file in ("timeline.csv", "summary.csv"):
            a, b = (tmp_path / run / "out" / name / file for run in ("killed", "whole"))
            assert a.read_text() == b.read_text(), (name, file)
    assert (tmp_path / "killed" / "out" / "summary.csv").read_text() == \
        (tmp_path / "whole" / "out" / "summary.csv").read_text()
    assert not Store(tmp_path / "killed").stage("predict", key).failures()


def test_roialign_windows_pool_what_the_crops_hold(ma52_store):
    """A ROIAlign model's windows: the global frame inside each entity's `frame_boxes` has the colour of the crop
    the same box cuts from the source frame (the square and the boxes agree, as in training)."""
    from types import SimpleNamespace

    from pipelines.data.crops import crop_boxes
    from pipelines.formats.keypoints import KeypointSet
    from pipelines.io.video import iter_frames
    from pipelines.stages.predict import _WindowInputs

    keypoints = KeypointSet(ma52_store)
    name = ma52_clips()[0].stem
    attrs = keypoints.attributes(name)
    model = SimpleNamespace(config=dualnet.preset("tiny", sem="roialign", num_frames=8))
    inputs = _WindowInputs(SimpleNamespace(model=model, tube_params=TubeParams()), keypoints, name,
                           attrs["width"], attrs["height"])
    windows = plan_windows(int(attrs["num_frames"]), float(attrs["fps"]), PredictParams(window=1.0, stride=0.5),
                           16, 8)
    frames = dict(enumerate(rgb for _, rgb in iter_frames(attrs["source_path"])))
    gaps = []
    for window in windows:
        _, boxes, visible, square = inputs.pose(window)
        out = inputs.images(frames, window, boxes, square)
        assert set(out) == {"frames", "frame_boxes"} and out["frames"].shape == (8, 3, 224, 224)
        for j, i in enumerate(window.frames):
            crops = crop_boxes(frames[int(i)], boxes[j], 112)[0].reshape(len(boxes[j]), 3, -1).mean(-1)  # (K, 3)
            for k, (x1, y1, x2, y2) in enumerate(np.round(out["frame_boxes"][j]).astype(int)):
                if visible[j, k] and x1 >= 0 and y1 >= 0 and x2 <= 224 and y2 <= 224:
                    region = out["frames"][j][:, y1:y2, x1:x2].reshape(3, -1).mean(-1)
                    gaps.append(np.abs(region - crops[k]).mean())
    assert len(gaps) > 20 and np.median(gaps) < 2.0, (len(gaps), np.median(gaps))
