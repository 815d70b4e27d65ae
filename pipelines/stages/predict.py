"""`dualnet predict`: a trained model over videos of any length -> per-video micro-action timelines and summaries.

Per video: pose over every frame (the `extract` stage, cached and written block by block), then sliding windows of
`window` seconds every `stride` seconds. Each window is made like a training clip (entity boxes from the window's
keypoints, the model's T frames at the segment centres of the tube sampling, crops and the global frame cut
from the decoded video) and scored. The video is decoded once, as a stream: only frames that a pending window still
needs are held, so memory does not grow with the video's length.

The per-window scores are the stage's item (``<store>/predict/<key>/items/<video>/windows.parquet``); the key hashes
the checkpoint's content, the window parameters and the keypoint output, so re-running on the same video with the
same model does no work. Segments and summaries are cheap to derive and are rewritten on every call:

- window i *owns* the stride-long span around its centre (the first window from 0 s, the last to the end);
- consecutive windows with the same top-1 label (scoring at least `min_score`) merge into one segment; a segment's
  scores are the mean of its windows' scores;
- the summary counts segments, their total duration and their rate per minute of video, per label.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from dualnet.entities import entity_boxes, get_entity_set, global_window, window_transform
from dualnet.layouts import get_layout
from pipelines.data.clips import segment_indices
from pipelines.data.crops import crop_boxes, cut_global, sample_indices
from pipelines.errors import DualnetError, InputError, StoreError
from pipelines.formats.checkpoints import Predictor
from pipelines.formats.keypoints import KeypointSet
from pipelines.io.sources import resolve_sources
from pipelines.io.video import iter_frames
from pipelines.kill_points import kill_point
from pipelines.progress import Progress
from pipelines.report.annotations import NO_SUBJECT, write_boris, write_eaf
from pipelines.report.review import write_review
from pipelines.store import StageSpec, Store, safe_name, write_file_atomic, write_json_atomic

STAGE = "predict"
VERSION = 3  # 2: windows record the share of frames with the subject (`subject`)
# 3: the key is the hash of the manifest (StageSpec): the training run behind the checkpoint is one of its inputs
# NO_SUBJECT (from report.annotations): the label of windows where the subject was not found
MIN_SUBJECT = 0.5  # a window needs the subject detected in at least this share of its frames to be scored


@dataclass(frozen=True)
class PredictParams:
    """Windowing (in the key) and how windows become segments (applied on every call, not in the key)."""

    window: float = 2.0  # seconds: micro-actions last 1-3 s (MA-52 clips average ~2 s)
    stride: float = 0.5  # seconds between window starts: segment boundaries are resolved to about this
    batch_size: int = 8  # windows per model call
    min_score: float = 0.0  # a window whose top-1 score is below this belongs to no segment
    top_k: int = 3  # labels listed per segment
    elan: bool = False  # also write <video>.eaf (ELAN: a tier per label, the media linked relatively)
    boris: bool = False  # also write <video>.boris.tsv (BORIS aggregated events)

    def __post_init__(self) -> None:
        if self.window <= 0 or self.stride <= 0:
            raise ValueError("window and stride must be positive (seconds)")
        if self.stride > self.window:
            raise ValueError(f"stride {self.stride} s is longer than the window {self.window} s: frames would be "
                             "skipped")
        if not 0.0 <= self.min_score <= 1.0:
            raise ValueError("min_score must lie in [0, 1]")
        if self.batch_size < 1 or self.top_k < 1:
            raise ValueError("batch_size and top_k must be >= 1")


def stage_spec(predictor: Predictor, params: PredictParams, keypoints_key: str, store: Store) -> StageSpec:
    """Window scores of one model over one keypoint output: keyed by the checkpoint's content, the windowing and
    how the model's inputs are cut; a checkpoint of this store's training runs is an input too (so `gc` keeps it)."""
    upstream = {"extract": keypoints_key}
    run_dir = predictor.checkpoint.resolve().parent
    if run_dir.parent == (store.root / "train").resolve():
        upstream["train"] = run_dir.name
    return StageSpec(STAGE, VERSION, {"window": params.window, "stride": params.stride}, inputs=upstream,
                     extra={"model": predictor.fingerprint, "tubes": asdict(predictor.tube_params)},
                     recorded={"checkpoint": str(predictor.checkpoint)})


@dataclass(frozen=True)
class Window:
    """Frames [start, end) of a video and the model's T frame indices in it."""

    start: int
    end: int
    frames: np.ndarray  # (T,) absolute, non-decreasing


def plan_windows(num_frames: int, fps: float, params: PredictParams, tube_frames: int,
                 model_frames: int) -> list[Window]:
    """Windows every `stride` over the video; each picks its T frames as training did (F uniform samples, then
    the T segment centres). A video shorter than one window is one window."""
    w = min(max(1, round(params.window * fps)), num_frames)
    s = max(1, round(params.stride * fps))
    picks = sample_indices(w, tube_frames)[segment_indices(tube_frames, model_frames, train=False)]
    return [Window(start, start + w, start + picks) for start in range(0, num_frames - w + 1, s)]


def window_spans(windows: list[Window], num_frames: int, fps: float) -> np.ndarray:
    """(N, 2) seconds each window owns: the stride around its centre; the first from 0, the last to the end."""
    centres = np.array([(w.start + w.end) / 2 for w in windows], dtype=np.float64)
    edges = np.concatenate([[0.0], (centres[:-1] + centres[1:]) / 2, [float(num_frames)]])
    return np.stack([edges[:-1], edges[1:]], axis=1) / fps


class _WindowInputs:
    """Builds each window's model inputs from a keypoint item and (for RGB models) the decoded frame stream."""

    def __init__(self, predictor: Predictor, keypoints: KeypointSet, name: str, width: int, height: int):
        self.predictor, self.keypoints, self.name = predictor, keypoints, name
        self.config = predictor.model.config
        self.layout = get_layout(self.config.layout)
        self.entities = get_entity_set(self.config.entity_set)
        self.size = (width, height)

    def pose(self, window: Window) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """keypoints (T, V, 3), entity boxes (T, K, 4) and entity visibility (T, K) of one window, boxes made from
        the window's keypoints, and the window's global square (x0, y0, side), as the tubes stage makes a clip's."""
        clip = self.keypoints.load(self.name, window.start, window.end)
        kp = clip.keypoints.astype(np.float64)
        tp = self.predictor.tube_params
        boxes, visible = entity_boxes(kp, self.layout, self.entities, self.size, tp.smooth_sigma)
        square = global_window(kp, np.asarray(self.layout.body), *self.size, tp.global_view)
        rel = window.frames - window.start
        return kp[rel].astype(np.float32), boxes[rel].astype(np.float32), visible[rel], square

    def images(self, frames: dict[int, np.ndarray], window: Window, boxes: np.ndarray,
               square: np.ndarray) -> dict[str, np.ndarray]:
        """The window's global frames (T, 3, G, G) uint8 cut at `square`, and with them the entity boxes in their
        pixels (T, K, 4) for ROIAlign models or the entity crops (T, K, 3, S, S) uint8 for crop models."""
        tp = self.predictor.tube_params
        out = {"frames": np.stack([cut_global(frames[int(i)], square, tp.global_size) for i in window.frames])}
        if self.config.sem == "roialign":
            scale, dx, dy = window_transform(square, tp.global_size)
            out["frame_boxes"] = (boxes * scale + np.array([dx, dy, dx, dy])).astype(np.float32)
        else:
            out["tubes"] = np.stack([crop_boxes(frames[int(i)], boxes[j], tp.size)[0]
                                     for j, i in enumerate(window.frames)])
        return out


def _stream_windows(video: Path, windows: list[Window], inputs: _WindowInputs,
                    uses_rgb: bool) -> Iterator[dict[str, np.ndarray]]:
    """Each window's inputs in order; the video is decoded once and a frame is dropped when no pending window
    needs it."""
    if not uses_rgb:
        for window in windows:
            kp, boxes, visible, _ = inputs.pose(window)
            yield {"keypoints": kp, "boxes": boxes, "visible": visible}
        return
    needed = {int(i) for w in windows for i in w.frames}
    held: dict[int, np.ndarray] = {}
    nxt = 0
    decoded = -1
    for index, (_, rgb) in enumerate(iter_frames(video)):
        decoded = index
        if index in needed:
            held[index] = rgb
        while nxt < len(windows) and int(windows[nxt].frames[-1]) <= index:
            w = windows[nxt]
            kp, boxes, visible, square = inputs.pose(w)
            yield {**inputs.images(held, w, boxes, square), "keypoints": kp, "boxes": boxes, "visible": visible}
            nxt += 1
            first_needed = int(windows[nxt].frames[0]) if nxt < len(windows) else index + 1
            for i in [i for i in held if i < first_needed]:
                del held[i]
    if nxt < len(windows):
        raise InputError(video, f"decoded {decoded + 1} frames, fewer than its keypoints have: not the video they "
                                "came from")


@torch.no_grad()
def score_windows(predictor: Predictor, video: Path, keypoints: KeypointSet, name: str, params: PredictParams,
                  on_window=None) -> pd.DataFrame:
    """Scores of every window of one video: columns window, start_frame, end_frame, start_s, end_s (the span it
    owns), subject (the share of its frames where the pose model found the subject), then one probability column
    per class."""
    model = predictor.model
    config = model.config
    attrs = keypoints.attributes(name)
    n, fps = int(attrs["num_frames"]), float(attrs["fps"])
    windows = plan_windows(n, fps, params, predictor.tube_params.frames, config.num_frames)
    inputs = _WindowInputs(predictor, keypoints, name, attrs["width"], attrs["height"])
    device = next(model.parameters()).device
    probs: list[np.ndarray] = []
    batch: list[dict[str, np.ndarray]] = []

    def run_batch() -> None:
        tensors = {k: torch.from_numpy(np.stack([b[k] for b in batch])).to(device) for k in batch[0]}
        probs.append(torch.softmax(model(**tensors).logits.float(), dim=1).cpu().numpy())
        if on_window is not None:
            on_window(len(batch))
        batch.clear()

    model.eval()
    for item in _stream_windows(video, windows, inputs, config.uses_rgb):
        batch.append(item)
        if len(batch) >= params.batch_size:
            run_batch()
    if batch:
        run_batch()
    spans = window_spans(windows, n, fps)
    scores = np.concatenate(probs) if probs else np.zeros((0, len(predictor.classes)), np.float32)
    detected = keypoints.detected(name)  # (n,)
    table = pd.DataFrame({"window": np.arange(len(windows)), "start_frame": [w.start for w in windows],
                          "end_frame": [w.end for w in windows], "start_s": spans[:, 0], "end_s": spans[:, 1],
                          "subject": [float(detected[w.start:w.end].mean()) if w.end > w.start else 0.0
                                      for w in windows]})
    return pd.concat([table, pd.DataFrame(scores, columns=predictor.classes)], axis=1)


def merge_segments(windows: pd.DataFrame, classes: list[str], min_score: float = 0.0,
                   top_k: int = 3) -> pd.DataFrame:
    """Consecutive windows with the same top-1 label (score >= min_score) -> segments: start_s, end_s, label,
    score, windows, and top-k labels with their mean scores (label_1, score_1, ...). Windows where the subject
    was found in under MIN_SUBJECT of the frames make `NO_SUBJECT` segments, with no score and no label ranks."""
    columns = ["segment", "start_s", "end_s", "duration_s", "label", "score", "windows"]
    columns += [c for i in range(1, top_k + 1) for c in (f"label_{i}", f"score_{i}")]
    if windows.empty:
        return pd.DataFrame(columns=columns)
    scores = windows[classes].to_numpy()
    best = scores.argmax(axis=1)
    keep = scores.max(axis=1) >= min_score
    labels = np.where(keep, best, -1)
    if "subject" in windows:
        labels = np.where(windows["subject"].to_numpy() < MIN_SUBJECT, -2, labels)
    rows = []
    i = 0
    while i < len(labels):
        j = i
        while j + 1 < len(labels) and labels[j + 1] == labels[i]:
            j += 1
        if labels[i] == -2:
            start, end = float(windows["start_s"].iloc[i]), float(windows["end_s"].iloc[j])
            rows.append({"segment": len(rows), "start_s": start, "end_s": end, "duration_s": end - start,
                         "label": NO_SUBJECT, "score": float("nan"), "windows": j - i + 1})
        elif labels[i] >= 0:
            mean = scores[i:j + 1].mean(axis=0)
            order = np.argsort(-mean, kind="stable")[:top_k]
            start, end = float(windows["start_s"].iloc[i]), float(windows["end_s"].iloc[j])
            row = {"segment": len(rows), "start_s": start, "end_s": end, "duration_s": end - start,
                   "label": classes[labels[i]], "score": float(mean[labels[i]]), "windows": j - i + 1}
            for r, c in enumerate(order, 1):
                row[f"label_{r}"], row[f"score_{r}"] = classes[c], float(mean[c])
            rows.append(row)
        i = j + 1
    return pd.DataFrame(rows, columns=columns)


def summarize(timeline: pd.DataFrame, duration_s: float, video: str) -> pd.DataFrame:
    """Per label of one video: segments (count), total duration and rate per minute of video."""
    minutes = max(duration_s, 1e-9) / 60
    if timeline.empty:
        return pd.DataFrame(columns=["video", "label", "count", "total_s", "rate_per_min", "video_s"])
    grouped = timeline.groupby("label", sort=True).agg(count=("segment", "size"), total_s=("duration_s", "sum"))
    out = grouped.reset_index()
    out.insert(0, "video", video)
    out["rate_per_min"] = out["count"] / minutes
    out["video_s"] = duration_s
    return out[["video", "label", "count", "total_s", "rate_per_min", "video_s"]]


def summarize_people(summaries: pd.DataFrame, people: pd.DataFrame) -> pd.DataFrame:
    """Per person (and group, when given) and label, over all their videos: count, total duration, minutes of
    video and rate per minute. `people` maps video -> person [-> group]."""
    keys = ["person", "group"] if "group" in people.columns else ["person"]
    merged = summaries.merge(people, on="video", how="left")
    merged["person"] = merged["person"].fillna(merged["video"])
    minutes = merged.drop_duplicates("video").groupby(keys, dropna=False)["video_s"].sum() / 60
    out = merged.groupby([*keys, "label"], dropna=False).agg(count=("count", "sum"), total_s=("total_s", "sum"))
    out = out.reset_index()
    out["minutes"] = out.set_index(keys).index.map(minutes).to_numpy()
    out["rate_per_min"] = out["count"] / out["minutes"]
    return out


def read_people(path: str | Path) -> pd.DataFrame:
    """A CSV with columns video (file name or stem) and person, optionally group."""
    try:
        people = pd.read_csv(path, dtype=str)
    except (OSError, ValueError) as e:
        raise InputError(path, f"cannot read the people CSV ({e})") from None
    missing = {"video", "person"} - set(people.columns)
    if missing:
        raise InputError(path, f"people CSV lacks column(s) {', '.join(sorted(missing))} (needs video, person"
                               "[, group])")
    people["video"] = people["video"].map(lambda v: safe_name(Path(v).stem))  # as videos are named in the store
    return people


@dataclass
class VideoPrediction:
    name: str
    windows: pd.DataFrame
    timeline: pd.DataFrame
    summary: pd.DataFrame
    duration_s: float
    files: dict[str, Path] = field(default_factory=dict)
    reused: bool = False
    source: str = ""  # the video's path
    fps: float = 0.0


@dataclass
class PredictReport:
    """What one `run_predict` call did: the videos it scored (or found scored) and those that failed."""

    key: str
    videos: list[VideoPrediction] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    people: Path | None = None
    seconds: float = 0.0


def write_outputs(prediction: VideoPrediction, out_dir: Path, classes: list[str], plot: bool = True,
                  elan: bool = False, boris: bool = False) -> dict:
    """timeline.csv, timeline.parquet, summary.csv, review.html (`report.review`) and (with `plot`) timeline.png of
    one video in `out_dir`; with `elan` / `boris` also ``<video>.eaf`` / ``<video>.boris.tsv``
    (`report.annotations`)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"timeline_csv": out_dir / "timeline.csv", "timeline_parquet": out_dir / "timeline.parquet",
             "summary_csv": out_dir / "summary.csv"}
    write_file_atomic(files["timeline_csv"], lambda p: prediction.timeline.to_csv(p, index=False))
    write_file_atomic(files["timeline_parquet"], lambda p: prediction.timeline.to_parquet(p, index=False))
    write_file_atomic(files["summary_csv"], lambda p: prediction.summary.to_csv(p, index=False))
    files["review"] = out_dir / "review.html"
    write_file_atomic(files["review"], lambda p: write_review(prediction.name, prediction.source, p,
                                                              prediction.timeline, prediction.duration_s))
    if plot:
        files["timeline_png"] = out_dir / "timeline.png"
        write_file_atomic(files["timeline_png"], lambda p: plot_timeline(prediction, classes, p))
    if elan:
        files["eaf"] = out_dir / f"{prediction.name}.eaf"
        write_file_atomic(files["eaf"], lambda p: write_eaf(prediction.timeline, prediction.source, p))
    if boris:
        files["boris"] = out_dir / f"{prediction.name}.boris.tsv"
        write_file_atomic(files["boris"], lambda p: write_boris(prediction.timeline, prediction.source,
                                                                 prediction.duration_s, prediction.fps, p))
    return files


def plot_timeline(prediction: VideoPrediction, classes: list[str], path: Path, top: int = 6) -> None:
    """Window scores of the most frequent labels over time (top) and the merged segments (bottom)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    windows, timeline = prediction.windows, prediction.timeline
    shown = [c for c in timeline["label"].value_counts().index if c in classes][:top] if not timeline.empty else []
    shown = shown or list(windows[classes].mean().sort_values(ascending=False).index[:top])
    colours = {c: plt.get_cmap("tab10")(i % 10) for i, c in enumerate(shown)}
    fig, (ax_s, ax_t) = plt.subplots(2, 1, figsize=(12, 4.5), sharex=True, height_ratios=[3, 1])
    centres = (windows["start_s"] + windows["end_s"]) / 2
    for c in shown:
        ax_s.plot(centres, windows[c], label=c, color=colours[c], lw=1.2)
    ax_s.set_ylim(0, 1)
    ax_s.set_ylabel("window score")
    ax_s.legend(loc="upper right", fontsize=7, ncol=min(3, max(1, len(shown))))
    ax_s.set_title(f"{prediction.name}: {len(timeline)} segment(s) over {prediction.duration_s:.1f} s")
    for _, seg in timeline.iterrows():
        colour = colours.get(seg["label"], (0.6, 0.6, 0.6, 1.0))
        ax_t.barh(0, seg["duration_s"], left=seg["start_s"], color=colour, edgecolor="white")
        if seg["duration_s"] > prediction.duration_s / 40:
            ax_t.text(seg["start_s"] + seg["duration_s"] / 2, 0, seg["label"], ha="center", va="center", fontsize=6,
                      rotation=90 if seg["duration_s"] < prediction.duration_s / 12 else 0)
    ax_t.set_yticks([])
    ax_t.set_xlabel("seconds")
    ax_t.set_xlim(0, max(prediction.duration_s, 1e-3))
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)


def run_predict(inputs: list[str], checkpoint: str | Path, store: Store | str | Path | None = None,
                params: PredictParams = PredictParams(), out_dir: str | Path | None = None,
                people: str | Path | None = None, plot: bool = True, device: str = "cpu",
                progress: Progress | None = None, extract_progress=None, *, extract) -> PredictReport:
    """Timelines and summaries of every video `inputs` names (files, folders, globs, list files).

    Writes per video ``<out_dir>/<video>/{timeline.csv, timeline.parquet, summary.csv, timeline.png}``, and
    ``<out_dir>/summary.csv`` over all videos (plus ``summary_by_person.csv`` with a `people` CSV). Default
    `out_dir`: ``<store>/predict/<key>/results``. Bad videos fail alone with a one-line reason.
    `extract`: the `extract` stage's `run_extract`, passed in by `pipelines.experiment` (a stage never imports
    another).
    """
    store = store if isinstance(store, Store) else Store(store)
    progress = progress or Progress()
    started = time.perf_counter()
    people_table = read_people(people) if people is not None else None
    predictor = Predictor.load(checkpoint, store, device)
    if predictor.model.config.pose_depth:
        raise InputError(checkpoint, "the model takes depth (pose_depth: z from a 3D keypoint source), but predict "
                                     "scores videos, whose extracted keypoints are x, y only: use a model trained "
                                     "with --no-depth")
    sources = resolve_sources(inputs)
    # Videos scored here are kept apart from any dataset's items (a file named like a training clip must not
    # replace it), and a changed video under a known name is simply extracted again.
    extract_report = extract(inputs, store, predictor.extract_params, progress=extract_progress,
                             namespace=STAGE, replace_changed=True)
    keypoints = KeypointSet(store, key=extract_report.key)
    spec = stage_spec(predictor, params, extract_report.key, store)
    report = PredictReport(spec.key, failed=dict(extract_report.failed))
    out_root = Path(out_dir) if out_dir is not None else store.stage(STAGE, spec.key).path / "results"
    with store.run(spec) as run:
        output, tmp = run.output, run.tmp
        run.record_request([s.name for s in sources])
        for source in sources:
            if source.name in report.failed:
                output.record_failure(source.name, source.path, report.failed[source.name])
                progress.item(source.name, report.failed[source.name])
                continue
            try:
                report.videos.append(_predict_one(source, predictor, keypoints, params, output, tmp, progress))
            except StoreError:
                raise
            except DualnetError as e:
                output.record_failure(source.name, source.path, str(e))
                report.failed[source.name] = str(e)
                progress.item(source.name, str(e))
                continue
            output.clear_failure(source.name)
            progress.item(source.name, None)
    for prediction in report.videos:
        prediction.files = write_outputs(prediction, out_root / prediction.name, predictor.classes, plot,
                                         params.elan, params.boris)
    if report.videos:
        summaries = pd.concat([p.summary for p in report.videos], ignore_index=True)
        write_file_atomic(out_root / "summary.csv", lambda p: summaries.to_csv(p, index=False))
        if people_table is not None:
            report.people = out_root / "summary_by_person.csv"
            by_person = summarize_people(summaries, people_table)
            write_file_atomic(report.people, lambda p: by_person.to_csv(p, index=False))
    report.seconds = time.perf_counter() - started
    return report


def _predict_one(source, predictor: Predictor, keypoints: KeypointSet, params: PredictParams, output, tmp: Path,
                 progress: Progress) -> VideoPrediction:
    attrs = keypoints.attributes(source.name)
    n, fps = int(attrs["num_frames"]), float(attrs["fps"])
    duration = n / fps if fps > 0 else float(n)
    item = output.item_path(source.name)
    windows_file = item / "windows.parquet"
    reused = windows_file.is_file() and _item_matches(item, attrs["source_fingerprint"])
    if reused:
        progress.note(f"{source.name}: scores cached, nothing to run")
        windows = pd.read_parquet(windows_file)
    else:
        planned = plan_windows(n, fps, params, predictor.tube_params.frames, predictor.model.config.num_frames)
        progress.begin(f"predict {source.name}", len(planned), "windows")
        windows = score_windows(predictor, Path(source.path), keypoints, source.name, params, progress.advance)
        work = tmp / f"{source.name}.{uuid.uuid4().hex[:8]}"
        try:
            work.mkdir(parents=True)
            windows.to_parquet(work / "windows.parquet", index=False)
            write_json_atomic(work / "item.json", {"fingerprint": attrs["source_fingerprint"],
                                                   "frames": n, "fps": fps, "classes": predictor.classes})
            output.commit(work, source.name)
        except OSError as e:
            raise StoreError(f"{output.path}: cannot write item {source.name!r} ({e.strerror or e})") from e
        kill_point("predict.item_committed")
    timeline = merge_segments(windows, predictor.classes, params.min_score, params.top_k)
    timeline.insert(0, "video", source.name)
    summary = summarize(timeline, duration, source.name)
    return VideoPrediction(source.name, windows, timeline, summary, duration, reused=reused, source=source.path,
                           fps=fps)


def _item_matches(item: Path, fingerprint: str) -> bool:
    try:
        return json.loads((item / "item.json").read_text())["fingerprint"] == fingerprint
    except (OSError, ValueError, KeyError):
        return False
