"""The `extract` stage: videos -> per-frame keypoints of the main subject, one zarr group per video.

Each item (one video) is written under the stage's ``tmp/`` and moved into ``items/`` when whole; finished short
items are then copied into packs of up to 256 (`keypoint_packs`: a 20,000-clip dataset is a few hundred files). An
item is done when its group or packed copy records the content fingerprint of the current file, so a re-run skips
it, a changed video is redone, and a killed run resumes with the missing items only.
"""

from __future__ import annotations

import math
import os
import queue
import shutil
import time
import uuid
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

from dualnet.layouts import get_layout
from pipelines.errors import DualnetError, InputError, StoreError
from pipelines.formats.keypoint_items import KeypointItemWriter
from pipelines.formats.keypoint_packs import Compactor, KeypointIndex
from pipelines.formats.params import ExtractParams, extract_spec
from pipelines.io.sources import VideoSource, resolve_sources
from pipelines.io.video import DecodeAhead, DecodedVideo, declared_frames, regular_timestamps
from pipelines.kill_points import kill_point
from pipelines.pose.subject import StreamingSubjectTracker
from pipelines.progress import Progress
from pipelines.store import MAX_ITEM_NAME, Shard, StageOutput, StageReport, Store

TRACK_BLOCK = 256  # frames the subject tracker resolves at once: 8.5 s at 30 fps, so a 1-3 s clip is one block


def stage_output(store: Store, params: ExtractParams) -> StageOutput:
    spec = extract_spec(params)
    return store.stage(spec.stage, spec.key)


@dataclass
class ExtractReport(StageReport):
    """What one `run_extract` call did: items processed, skipped (same content already stored), failed."""

    frames: int = 0  # frames that went through the pose model


MEDIAPIPE_CORES = 1.36  # cores one MediaPipe Holistic process keeps busy (bench/bench_extract.py, `cores_used`)


def default_workers(cores: int | None = None) -> int:
    """Worker processes for `cores` available cores (default: this process's CPU set): one per MEDIAPIPE_CORES,
    rounded up (2 cores: 2 workers measured 1.14x and 1.24x one; 16: 12; 64: 48)."""
    cores = cores if cores is not None else len(os.sched_getaffinity(0))
    return max(1, math.ceil(cores / MEDIAPIPE_CORES))


def check_device(params: ExtractParams) -> None:
    """Raise ValueError (one line) when `params.device` cannot run here: cuda without onnxruntime's CUDA provider."""
    if params.device != "cuda":
        return
    import onnxruntime

    providers = onnxruntime.get_available_providers()
    if "CUDAExecutionProvider" not in providers:
        raise ValueError(f"--device cuda: this onnxruntime has no CUDA provider (it has {', '.join(providers)}); "
                         "install onnxruntime-gpu, or extract with --device cpu")


def make_estimator(params: ExtractParams, models_dir: Path | None = None):
    """The pose estimator `params` names; rtmlib models given as URLs are fetched once into `models_dir`."""
    check_device(params)
    if params.backend == "rtmlib":
        from pipelines.io.downloads import resolve_model
        from pipelines.pose import rtmlib_wholebody as rtm

        models_dir = models_dir if models_dir is not None else Path("cache") / "models"
        det = resolve_model(params.det_model or rtm.DEFAULT_DET, models_dir)
        pose = resolve_model(params.pose_model or rtm.DEFAULT_POSE, models_dir)
        return rtm.RTMLibEstimator(str(det), str(pose), params.det_input_size, params.pose_input_size,
                                   device=params.device)
    from pipelines.pose.mediapipe_holistic import HolisticEstimator

    return HolisticEstimator(params.model_complexity, params.min_detection_confidence,
                             params.min_tracking_confidence)


def extract_video(source: VideoSource, video: DecodedVideo, fingerprint: str, params: ExtractParams, estimator,
                  group_path: Path, on_frames=None, block: int = TRACK_BLOCK) -> int:
    """Run the pose estimator over every frame of one video, keep the main subject and write the item at
    `group_path` (a temporary location) block by block: memory stays flat however long the video is.

    Returns the frame count. Raises InputError when decoding or the pose model fails on this file, StoreError when
    the item cannot be written.

    Args:
        video: `source`'s frames, decoded in a background thread (`DecodeAhead`) while the pose model works: its
            `process` waits for the graph with the GIL released, so decoding (~2 ms a frame with the colour
            conversion) runs alongside it instead of in turn.
        on_frames: Called with a frame count every few frames (progress).
        block: Frames the subject tracker resolves at once (see StreamingSubjectTracker).
    """
    path = source.path
    try:
        estimator.reset()
        info = video.info()
        layout = estimator.layout
        tracker = StreamingSubjectTracker(layout.num_keypoints, layout.body, params.max_jump, block=block)
        writer = _store_call(group_path, lambda: KeypointItemWriter(
            group_path, layout=get_layout(params.layout), fps=info.fps, width=info.width, height=info.height,
            source_name=Path(path).name, source_path=path, fingerprint=fingerprint, dtype=params.dtype,
            extra={"rotation": info.rotation}))
        times: list[float] = []  # 8 bytes a frame: kept whole, as timestamps may need rebuilding at the end
        for t, rgb in video:
            resolved = tracker.push(estimator(rgb))
            times.append(t)
            if resolved is not None:
                _store_call(group_path, lambda r=resolved: writer.append(*r))
                kill_point("extract.block")
            if len(times) % 8 == 0:
                kill_point("extract.frames")
                if on_frames is not None:
                    on_frames(8)
        resolved = tracker.flush()
        if resolved is not None:
            _store_call(group_path, lambda: writer.append(*resolved))
        _store_call(group_path, lambda: writer.close(regular_timestamps(times, info.fps)))
        kill_point("extract.item_written")
    except DualnetError:
        raise
    except Exception as e:  # a decoder or pose-model failure on this file must not end a 20,000-video run
        raise InputError(path, f"pose extraction failed ({type(e).__name__}: {e})") from e
    if on_frames is not None and len(times) % 8:
        on_frames(len(times) % 8)
    return len(times)


def _store_call(group_path: Path, call):
    """Run a store write; an OSError becomes a StoreError (it ends the run: every later item would fail alike)."""
    try:
        return call()
    except OSError as e:
        raise StoreError(f"{group_path.parent.parent}: cannot write item {group_path.name!r} "
                         f"({e.strerror or e})") from e


def _process_one(source: VideoSource, video: DecodedVideo, fingerprint: str, params: ExtractParams,
                 output: StageOutput, tmp: Path, estimator, on_frames=None) -> int:
    """Extract, write and commit one item; returns its frame count.

    Raises DualnetError for a bad video (the item fails, the run goes on) and StoreError when the store cannot be
    written (the run stops: every further item would fail the same way).
    """
    group_path = tmp / f"{source.name}.{uuid.uuid4().hex[:8]}"
    try:
        n = extract_video(source, video, fingerprint, params, estimator, group_path, on_frames)
    except (InputError, StoreError):
        shutil.rmtree(group_path, ignore_errors=True)  # the half-written item (a bad video, a full disk)
        raise
    try:
        output.commit(group_path, source.name)
    except OSError as e:
        raise StoreError(f"{output.path}: cannot write item {source.name!r} ({e.strerror or e})") from e
    kill_point("extract.item_committed")
    return n


# -- worker processes -----------------------------------------------------------------------------------------------
_worker: dict = {}


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this worker when its parent dies, so an orphan never writes after a crash."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _pin_worker(counter, workers: int) -> None:
    """Give worker number `counter` its own share of the CPUs.

    MediaPipe runs its sub-graphs on several threads (~1.4 cores per process here); unpinned workers then
    oversubscribe the machine and thrash. Disjoint CPU sets (cpus[i::workers]) measured +14% frames/s with 2 workers
    on 2 cores.
    """
    if not hasattr(os, "sched_setaffinity"):
        return
    with counter.get_lock():
        index = counter.value
        counter.value += 1
    cpus = sorted(os.sched_getaffinity(0))
    share = cpus[index % workers::workers] if workers <= len(cpus) else [cpus[index % len(cpus)]]
    os.sched_setaffinity(0, share)


def _init_worker(progress_queue, params: ExtractParams, models_dir: Path, counter, workers: int) -> None:
    _die_with_parent()
    _pin_worker(counter, workers)
    _worker["queue"] = progress_queue
    _worker["params"] = params
    _worker["estimator"] = make_estimator(params, models_dir)


def _work(task: tuple) -> tuple[str, int, str | None]:
    source, fingerprint, output, tmp = task
    q = _worker["queue"]
    try:
        with DecodeAhead([source.path]) as videos:
            n = _process_one(source, next(iter(videos)), fingerprint, _worker["params"], output, tmp,
                             _worker["estimator"], q.put)
        return source.name, n, None
    except StoreError:
        raise  # ends the run in the parent
    except DualnetError as e:
        return source.name, 0, str(e)


# -- the stage ------------------------------------------------------------------------------------------------------
def run_extract(
    inputs: list[str],
    store: Store | str | Path | None = None,
    params: ExtractParams = ExtractParams(),
    workers: int = 1,
    shard: Shard = Shard(),
    video_root: str | Path | None = None,
    progress: Progress | None = None,
    namespace: str = "",
    replace_changed: bool = False,
) -> ExtractReport:
    """Extract keypoints for every video `inputs` name into the store; skip what is already done.

    Bad videos (missing, empty, not a video, truncated, a name too long for the store) are recorded as failures
    with a one-line reason and do not stop the others. An item is never replaced by a different video silently: a
    video whose item name is held by another file (another path, other content) fails with a one-line reason; the
    same path with new content (a file edited in place) is extracted again. Raises StoreLockedError when another
    writer holds the store, InputError when the inputs themselves cannot be resolved.

    Args:
        namespace: Keeps these items in an output of their own (e.g. ``predict``: videos scored by a model never
            touch a dataset's items); part of the stage key.
        replace_changed: Replace an item whose video changed, wherever it now is (for caches such as predict's).
    """
    store = store if isinstance(store, Store) else Store(store)
    progress = progress or Progress()
    started = time.perf_counter()
    check_device(params)  # before anything is opened or written
    workers = workers if workers > 0 else default_workers()
    sources = resolve_sources(inputs, video_root, shard)
    spec = extract_spec(params, namespace)
    report = ExtractReport(spec.key)
    # a namespace's output is reached through the stage that asked for it: it does not move the extract ref
    with store.run(spec, shard, set_ref=not namespace) as run:
        output, tmp = run.output, run.tmp
        run.record_request([s.name for s in sources])
        todo: list[tuple[VideoSource, str]] = []
        index = KeypointIndex(output)
        fingerprints = store.fingerprints()
        try:
            for source in sources:
                if len(source.name) > MAX_ITEM_NAME:  # its files in the store could not be named
                    _fail(output, report, progress, source, str(InputError(
                        source.path, f"file name too long for the store (an item name of {len(source.name)} "
                                     f"characters, at most {MAX_ITEM_NAME}): rename the file")))
                    continue
                try:
                    fp = fingerprints.fingerprint(source.path)
                except FileNotFoundError:
                    _fail(output, report, progress, source, str(InputError(source.path, "file not found")))
                    continue
                except OSError as e:
                    _fail(output, report, progress, source, str(InputError(source.path, e.strerror or str(e))))
                    continue
                held = index.fingerprint(source.name)
                if held == fp:
                    report.skipped.append(source.name)
                elif held is not None and not replace_changed and _held_elsewhere(index, source):
                    _fail(output, report, progress, source, str(InputError(
                        source.path, f"a different video ({index.attributes(source.name).get('source_path')}) is "
                        f"already stored as item {source.name!r}; rename one of them or use another --store")))
                else:
                    todo.append((source, fp))
        finally:
            fingerprints.close()
        declared = 0
        for source, _ in todo:
            try:
                declared += declared_frames(source.path)
            except DualnetError:
                pass  # reported when the item runs
        if report.skipped:
            progress.note(f"{len(report.skipped)} video(s) already extracted: skipped")
        progress.begin(f"extract {len(todo)} video(s)", declared or None, "frames")
        if todo and params.backend == "rtmlib" and workers > 1:
            make_estimator(params, output.root / "models").close()  # download once, before workers start
        compactor = Compactor(output, tmp, shard.owns)
        if todo:
            if workers <= 1:
                _run_inline(todo, params, output, tmp, report, progress, compactor)
            else:
                _run_pool(todo, params, output, tmp, report, progress, workers, compactor)
        compactor.finish()
    report.seconds = time.perf_counter() - started
    return report


def _held_elsewhere(index: KeypointIndex, source: VideoSource) -> bool:
    """Whether the stored item of `source`'s name came from a file at another path (its content differs too)."""
    held = (index.attributes(source.name) or {}).get("source_path")
    return held is not None and os.path.abspath(held) != source.path


def _fail(output: StageOutput, report: ExtractReport, progress: Progress, source: VideoSource,
          error: str) -> None:
    output.record_failure(source.name, source.path, error)
    report.failed[source.name] = error
    progress.item(source.name, error)


def _done(report: ExtractReport, progress: Progress, compactor: Compactor, name: str, frames: int) -> None:
    report.processed.append(name)
    report.frames += frames
    progress.item(name, None)
    compactor.added(name)


def _run_inline(todo, params, output, tmp, report, progress, compactor) -> None:
    estimator = make_estimator(params, output.root / "models")
    try:
        # the next video is decoded while the pose model works on this one
        with DecodeAhead([source.path for source, _ in todo]) as videos:
            for (source, fp), video in zip(todo, videos, strict=True):
                try:
                    n = _process_one(source, video, fp, params, output, tmp, estimator, progress.advance)
                except StoreError:
                    raise
                except DualnetError as e:
                    _fail(output, report, progress, source, str(e))
                else:
                    _done(report, progress, compactor, source.name, n)
    finally:
        estimator.close()


def _run_pool(todo, params, output, tmp, report, progress, workers, compactor) -> None:
    ctx = get_context("spawn")  # MediaPipe's graph and threads do not survive fork
    frames_queue = ctx.Queue()
    by_name = {source.name: source for source, _ in todo}

    def drain() -> None:
        while True:
            try:
                progress.advance(frames_queue.get_nowait())
            except queue.Empty:
                return

    workers = min(workers, len(todo))
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                             initargs=(frames_queue, params, output.root / "models", ctx.Value("i", 0),
                                       workers)) as pool:
        futures = {pool.submit(_work, (source, fp, output, tmp)): source for source, fp in todo}
        pending = set(futures)
        while pending:
            finished, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            drain()
            for future in finished:
                source = futures[future]
                try:
                    name, n, error = future.result()
                except BrokenProcessPool:
                    # Which video killed it is unknown (every pending item fails alike): stop, keep what is done.
                    raise DualnetError(f"a worker process died (last submitted: {source.path}); finished items are "
                                       "kept, re-run with --workers 1 to find the video that crashes it") from None
                if error is None:
                    _done(report, progress, compactor, name, n)
                else:
                    _fail(output, report, progress, by_name[name], error)
    drain()
