"""Datasets as one clip index: clip id, video or keypoint source, frame range, fine and coarse label, subject, split.

Adapters read each dataset's own files: MA-52 (official lists), iMiGUE (segment CSV), JHMDB (DD-Net pickles, 3
splits), pyskl pickles (their ``split`` dict), a generic CSV, and a lab's own annotations of long videos (an ELAN
tier, BORIS aggregated events). Malformed lines fail with the file and line.
"""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from pipelines.errors import InputError
from pipelines.hashing import stable_hash
from pipelines.store import safe_name


@dataclass(frozen=True)
class Clip:
    """One labelled (or test) clip."""

    clip_id: str  # unique within the index; the keypoint item name where keypoints come from an import
    source: str  # video path, or keypoint item name, the clip is cut from
    split: str  # train | val | test (| train1, test1, ... where a dataset has several)
    label: int | None = None  # fine label id; None where hidden (MA-52 test)
    coarse: int | None = None  # coarse (body-level) label id where the dataset has one
    subject: str | None = None  # person id, for subject-disjoint protocols
    start: int | None = None  # first frame (inclusive) within `source`; None = from the start
    end: int | None = None  # last frame (exclusive); None = to the end


@dataclass
class ClipIndex:
    """A dataset's clips and class names."""

    name: str
    classes: list[str]
    clips: list[Clip]
    coarse_classes: list[str] = field(default_factory=list)

    def frame(self) -> pd.DataFrame:
        """The clips as a DataFrame (one row per clip; label columns nullable integers)."""
        df = pd.DataFrame([asdict(c) for c in self.clips])
        for col in ("label", "coarse", "start", "end"):
            df[col] = df[col].astype("Int64")
        return df

    def split(self, name: str) -> list[Clip]:
        return [c for c in self.clips if c.split == name]

    @property
    def splits(self) -> list[str]:
        return list(dict.fromkeys(c.split for c in self.clips))

    def counts(self) -> pd.DataFrame:
        """Clips per class (rows, by class name) and split (columns); unlabelled clips count under '(no label)'."""
        df = self.frame()
        names = df["label"].map(lambda i: "(no label)" if pd.isna(i) else self.classes[int(i)])
        table = pd.crosstab(names, df["split"]).reindex(columns=self.splits, fill_value=0)
        order = [c for c in self.classes if c in table.index] + [i for i in table.index if i not in self.classes]
        return table.reindex(order)


def _require(*paths: Path) -> None:
    """A dataset file that is missing fails as one line naming it (not a traceback from deep inside a reader)."""
    for path in paths:
        if not Path(path).is_file():
            raise InputError(path, "not found" if not Path(path).exists() else "is not a file")


def _int(text: str, where: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise InputError(where, f"{what} {text!r} is not an integer") from None


def _check_label(label: int, classes: list[str], where: str) -> int:
    if not 0 <= label < len(classes):
        raise InputError(where, f"label {label} is outside the {len(classes)} classes (0..{len(classes) - 1})")
    return label


# -- MA-52 --------------------------------------------------------------------------------------------------------
def read_label_names(path: Path) -> list[str]:
    """``id<TAB>name`` (or ``id name``) a line, ids 0..N-1 in order."""
    names = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.replace("\t", " ").split(" ", 1)
        if len(parts) != 2 or _int(parts[0], f"{path}:{lineno}", "class id") != len(names):
            raise InputError(f"{path}:{lineno}", f"expected '<{len(names)}> <name>', got {line!r}")
        names.append(parts[1].strip())
    return names


def read_fine_to_coarse(path: Path) -> tuple[dict[int, int], list[str]]:
    """fine id -> coarse id, and the coarse class names, from ``fine_to_coarse.tsv``."""
    mapping, coarse_names = {}, {}
    with open(path, newline="") as f:
        for lineno, row in enumerate(csv.DictReader(f, delimiter="\t"), 2):
            where = f"{path}:{lineno}"
            fine = _int(row.get("fine_id", ""), where, "fine_id")
            coarse = _int(row.get("coarse_id", ""), where, "coarse_id")
            mapping[fine] = coarse
            coarse_names[coarse] = row.get("coarse_name", str(coarse))
    return mapping, [coarse_names[i] for i in sorted(coarse_names)]


def ma52_subject(video_id: str) -> str:
    """The participant of an MA-52 video id ``PPPP_SS_NNNN``."""
    return video_id.split("_")[0]


def ma52(annotations: str | Path, video_root: str | Path | None = None, protocol: str = "official",
         val_fraction: float = 0.33) -> ClipIndex:
    """MA-52 from its official lists (``{train,val,test}_list_videos.txt``, ``label_name.txt``, ``fine_to_coarse.tsv``).

    Args:
        video_root: Where the ``<video>.mp4`` files lie (default: the annotations folder); clips without it still
            index by name.
        protocol: ``official`` (val shares all subjects with train) or ``subject``: train+val regrouped so that
            no participant is in both; about `val_fraction` of the participants, chosen by a stable hash of
            their id, form val. Test is unchanged (labels hidden).
    """
    root = Path(annotations)
    _require(root / "label_name.txt", root / "fine_to_coarse.tsv",
             *(root / f"{split}_list_videos.txt" for split in ("train", "val", "test")))
    classes = read_label_names(root / "label_name.txt")
    fine_to_coarse, coarse_classes = read_fine_to_coarse(root / "fine_to_coarse.tsv")
    videos = Path(video_root) if video_root is not None else root
    clips = []
    for split in ("train", "val", "test"):
        path = root / f"{split}_list_videos.txt"
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            parts = line.split()
            if len(parts) != 2:
                raise InputError(where, f"expected '<video>.mp4 <label>', got {line!r}")
            video, label_text = parts
            label = _check_label(_int(label_text, where, "label"), classes, where)
            vid = Path(video).stem
            video = f"{split}/{video}" if not (videos / video).exists() and (videos / split / video).exists() \
                else video
            if split == "test":  # hidden: the lists carry 0 for every test clip
                clips.append(Clip(vid, str(videos / video), "test", subject=ma52_subject(vid)))
            else:
                clips.append(Clip(vid, str(videos / video), split, label, fine_to_coarse[label], ma52_subject(vid)))
    if protocol == "subject":
        clips = _subject_disjoint(clips, val_fraction)
    elif protocol != "official":
        raise ValueError(f"protocol {protocol!r} is not 'official' or 'subject'")
    return ClipIndex("ma52", classes, clips, coarse_classes)


def _subject_disjoint(clips: list[Clip], val_fraction: float) -> list[Clip]:
    """Regroup train+val so that every subject is in exactly one of them (stable across runs and machines)."""
    def is_val(subject: str | None) -> bool:
        return int(stable_hash(["subject-split", subject], chars=8), 16) / 16**8 < val_fraction

    out = []
    for c in clips:
        if c.split in ("train", "val"):
            c = Clip(**{**asdict(c), "split": "val" if is_val(c.subject) else "train"})
        out.append(c)
    return out


# -- iMiGUE ---------------------------------------------------------------------------------------------------------
def imigue(segments_csv: str | Path, source_root: str | Path | None = None, class_names: str | Path | None = None,
           test_subjects: list[str] | None = None, test_fraction: float = 0.25) -> ClipIndex:
    """iMiGUE segments cut by frame range from long videos (or OpenPose folders).

    The CSV has at least ``video_id,label_id,start_frame,end_frame,subject_id`` columns. The cross-subject split
    puts `test_subjects` in test; without that list, a stable hash assigns ~`test_fraction` of the subjects.
    Label ids are used as given (0-based, with the class names of `class_names`, e.g. MiGA's class_names_32.txt).
    """
    path = Path(segments_csv)
    root = Path(source_root) if source_root is not None else path.parent
    _require(path, *([Path(class_names)] if class_names else []))
    classes = _read_class_file(Path(class_names)) if class_names else []
    test = set(test_subjects or [])
    rows = []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        needed = {"video_id", "label_id", "start_frame", "end_frame", "subject_id"}
        missing = needed - set(reader.fieldnames or [])
        if missing:
            raise InputError(path, f"missing columns: {', '.join(sorted(missing))}")
        for lineno, row in enumerate(reader, 2):
            where = f"{path}:{lineno}"
            label = _int(row["label_id"], where, "label_id")
            start, end = _int(row["start_frame"], where, "start_frame"), _int(row["end_frame"], where, "end_frame")
            if end <= start:
                raise InputError(where, f"end_frame {end} is not after start_frame {start}")
            rows.append((row["video_id"], label, start, end, row["subject_id"], lineno))
    if not classes:
        classes = [str(i) for i in range(max(r[1] for r in rows) + 1)] if rows else []
    clips = []
    for video, label, start, end, subject, lineno in rows:
        _check_label(label, classes, f"{path}:{lineno}")
        if test:
            split = "test" if subject in test else "train"
        else:
            split = "test" if int(stable_hash(["subject-split", subject], chars=8), 16) / 16**8 < test_fraction \
                else "train"
        clips.append(Clip(f"{video}_{start}_{end}", str(root / video), split, label, None, subject, start, end))
    return ClipIndex("imigue", classes, clips)


def _read_class_file(path: Path) -> list[str]:
    """``<id> <name>`` a line (MiGA's class_names_32.txt) or one name a line."""
    names = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        first, _, rest = line.strip().partition(" ")
        if first.isdigit() and rest:
            if int(first) != len(names):
                raise InputError(f"{path}:{lineno}", f"expected class id {len(names)}, got {first}")
            names.append(rest.strip())
        else:
            names.append(line.strip())
    return names


# -- JHMDB ----------------------------------------------------------------------------------------------------------
def jhmdb(root: str | Path, split: int = 1) -> ClipIndex:
    """One of JHMDB's 3 official splits from DD-Net's ``GT_{train,test}_{split}.pkl``.

    Clip ids are ``GT_<part>_<split>_<index>``, the item names `import jhmdb` gives the same pickles' clips.
    """
    from pipelines.pose.importers.pyskl_pickle import load_pickle

    if split not in (1, 2, 3):
        raise ValueError(f"JHMDB split must be 1, 2 or 3, not {split}")
    root = Path(root)
    parts = {}
    for part in ("train", "test"):
        path = root / f"GT_{part}_{split}.pkl"
        data = load_pickle(path)
        if not isinstance(data, dict) or "label" not in data:
            raise InputError(path, "not a JHMDB joint pickle (no 'label')")
        parts[part] = (path, [str(x) for x in data["label"]])
    classes = sorted({label for _, labels in parts.values() for label in labels})
    clips = [Clip(f"{path.stem}_{i:04d}", f"{path.stem}_{i:04d}", part, classes.index(label))
             for part, (path, labels) in parts.items() for i, label in enumerate(labels)]
    return ClipIndex(f"jhmdb{split}", classes, clips)


def shrec17(root: str | Path, classes: int = 14) -> ClipIndex:
    """SHREC'17 hand gestures: the official subject-disjoint split (1,960 train / 840 test sequences), 14 gesture
    classes or 28 (gesture x one finger / whole hand). Clip ids are the item names `import shrec17` gives."""
    from pipelines.pose.importers.shrec17 import FINGERS, GESTURES, clip_name, read_lists

    if classes not in (14, 28):
        raise ValueError(f"SHREC'17 has 14 or 28 classes, not {classes}")
    names = list(GESTURES) if classes == 14 else [f"{g}_{f}" for g in GESTURES for f in FINGERS]
    clips = []
    for r in read_lists(Path(root)):
        name = clip_name(r["gesture"], r["finger"], r["subject"], r["essai"])
        clips.append(Clip(name, name, r["split"], r[f"label_{classes}"] - 1, subject=str(r["subject"])))
    return ClipIndex(f"shrec17_{classes}", names, clips)


# -- pyskl pickles and generic CSV ------------------------------------------------------------------------------------
def pyskl(pickle_path: str | Path, class_names: str | Path | None = None) -> ClipIndex:
    """Clips and splits of a pyskl PoseDataset pickle (a clip in several splits is listed once per split)."""
    from pipelines.pose.importers.pyskl_pickle import load_pickle

    path = Path(pickle_path)
    data = load_pickle(path)
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise InputError(path, "not a pyskl PoseDataset pickle (no 'annotations' list)")
    labels = {}
    for i, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict) or "frame_dir" not in ann:
            raise InputError(path, f"annotation {i}: missing 'frame_dir'")
        labels[str(ann["frame_dir"])] = _int(str(ann.get("label", "")), f"{path} annotation {i}", "label")
    classes = _read_class_file(Path(class_names)) if class_names else \
        [str(i) for i in range(max(labels.values(), default=-1) + 1)]
    clips = []
    for split, names in (data.get("split") or {"all": list(labels)}).items():
        for name in names:
            if str(name) not in labels:
                raise InputError(path, f"split {split!r} names {name!r}, which has no annotation")
            label = _check_label(labels[str(name)], classes, f"{path} ({name})")
            clips.append(Clip(str(name), str(name), str(split), label))
    return ClipIndex(path.stem, classes, clips)


def _check_csv_row(row: dict, header: list[str], where: str) -> None:
    """A CSV row has one field per header column and a path and a label (csv.DictReader fills a short row with
    None and gathers a long row's extra fields under None: either would fail far from the file)."""
    fields = len(header) + len(row.get(None, [])) - sum(v is None for v in row.values())
    if fields != len(header):
        raise InputError(where, f"row has {fields} field(s), the header has {len(header)} ({','.join(header)})")
    for column in ("path", "label"):
        if not row[column].strip():
            raise InputError(where, f"empty {column}")


def generic_csv(path: str | Path, root: str | Path | None = None) -> ClipIndex:
    """``path,label[,split,start,end,subject]`` with a header; labels are class names (sorted) or integers."""
    path = Path(path)
    base = Path(root) if root is not None else path.parent
    _require(path)
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if not {"path", "label"} <= set(reader.fieldnames or []):
            raise InputError(path, "needs a header with at least the columns path,label")
        rows = []
        for row in reader:
            _check_csv_row(row, reader.fieldnames, f"{path}:{reader.line_num}")
            rows.append((reader.line_num, row))
    names = sorted({row["label"] for _, row in rows})
    numeric = all(n.lstrip("-").isdigit() for n in names)
    classes = [str(i) for i in range(max(int(n) for n in names) + 1)] if numeric and names else names
    clips = []
    for lineno, row in rows:
        where = f"{path}:{lineno}"
        label = _check_label(int(row["label"]), classes, where) if numeric else classes.index(row["label"])
        start = _int(row["start"], where, "start") if row.get("start") else None
        end = _int(row["end"], where, "end") if row.get("end") else None
        source = Path(row["path"]) if Path(row["path"]).is_absolute() else base / row["path"]
        clip_id = Path(row["path"]).stem + (f"_{start}_{end}" if start is not None else "")
        clips.append(Clip(clip_id, str(source), row.get("split") or "train", label, None, row.get("subject") or None,
                          start, end))
    return ClipIndex(path.stem, classes, clips)


# -- a lab's own annotations: ELAN tiers, BORIS aggregated events --------------------------------------------
def annotated(tracks: list, name: str, video_root: str | Path | None = None, val_fraction: float = 0.25
              ) -> ClipIndex:
    """Clips cut by time range out of the long videos that annotation tracks (`pipelines.io.annotations.Track`)
    describe: each segment a clip labelled with its value, its frames ``round(t * fps)`` of its video.

    Classes are the labels, sorted. Splits are by video, so that no video is in both: the ``floor(val_fraction *
    videos)`` videos with the lowest stable hash of their file name are val, the others train (one video: all
    train). A video that is missing, or a segment that reaches past its end, fails as one line before anything is
    cut."""
    from pipelines.io.annotations import resolve_media
    from pipelines.io.video import probe

    labelled = []
    for track in tracks:
        media = resolve_media(track, video_root)
        info = probe(media)
        if info.fps <= 0:
            raise InputError(media, "declares no frame rate: annotation times cannot become frames")
        for row in track.segments.itertuples():
            start, end = round(row.start_s * info.fps), round(row.end_s * info.fps)
            where = f"{track.path} ({row.label!r} at {row.start_s:g}-{row.end_s:g} s)"
            if end <= start:
                raise InputError(where, f"shorter than one frame of {media.name} ({info.fps:g} fps)")
            if info.declared_frames and end > info.declared_frames:
                raise InputError(where, f"reaches past the end of {media.name} "
                                        f"({info.declared_frames / info.fps:.3f} s)")
            labelled.append((media, row.label, start, end, track.subject, where))
    classes = sorted({label for _, label, *_ in labelled})
    videos = sorted({media for media, *_ in labelled}, key=lambda m: stable_hash(["annotated-split", m.name]))
    val = set(videos[:int(val_fraction * len(videos))])
    clips, seen = [], {}
    for media, label, start, end, subject, where in labelled:
        clip_id = f"{safe_name(media.stem)}_{start}_{end}"
        if clip_id in seen:
            raise InputError(where, f"the same frames of {media.name} as {seen[clip_id]}: one video, one track "
                                    "(the pose pipeline follows one person)")
        seen[clip_id] = where
        clips.append(Clip(clip_id, str(media), "val" if media in val else "train", classes.index(label), None,
                          subject, start, end))
    return ClipIndex(name, classes, clips)


def elan(root: str | Path, tier: str | None = None, video_root: str | Path | None = None,
         val_fraction: float = 0.25) -> ClipIndex:
    """ELAN files (an ``.eaf``, or a folder of them): the annotations of the tier named `tier`, their values as
    labels, each file's linked video cut by time range (see `annotated`)."""
    from pipelines.io.annotations import annotation_files, read_elan

    if not tier:
        raise ValueError("the elan dataset needs the name of the tier to read (--tier, or [dataset] tier)")
    tracks = [read_elan(path, tier) for path in annotation_files(root, (".eaf",))]
    return annotated(tracks, "elan", video_root, val_fraction)


def boris(root: str | Path, video_root: str | Path | None = None, val_fraction: float = 0.25) -> ClipIndex:
    """BORIS aggregated events (a ``.tsv``/``.csv`` export, or a folder of ``.tsv``): each media file's STATE events
    per subject as a track, behaviours as labels (see `annotated`)."""
    from pipelines.io.annotations import annotation_files, read_boris

    tracks = [t for path in annotation_files(root, (".tsv",)) for t in read_boris(path)]
    return annotated(tracks, "boris", video_root, val_fraction)


ADAPTERS = {"ma52": ma52, "imigue": imigue, "jhmdb": jhmdb, "pyskl": pyskl, "csv": generic_csv, "shrec17": shrec17,
            "shrec17_28": lambda root: shrec17(root, 28), "elan": elan, "boris": boris}


# -- from an index to training inputs ---------------------------------------------------------------------------------
def load_index(dataset: str, root: str | Path, protocol: str = "official", split: int = 1,
               video_root: str | Path | None = None) -> ClipIndex:
    """The ClipIndex of a dataset by name (ma52 | imigue | jhmdb | pyskl | csv)."""
    if dataset == "ma52":
        return ma52(root, video_root, protocol=protocol)
    if dataset == "jhmdb":
        return jhmdb(root, split)
    if dataset not in ADAPTERS:
        raise ValueError(f"unknown dataset {dataset!r}; known: {', '.join(ADAPTERS)}")
    return ADAPTERS[dataset](root)


def item_name(clip: Clip) -> str:
    """The store item (keypoints, tubes) of a clip: its video's stem, or its id for a segment cut from a longer
    video (`dualnet run` cuts those into their own files first)."""
    if clip.start is not None or clip.end is not None:
        return safe_name(clip.clip_id)
    return safe_name(Path(clip.source).stem)


def require_classes(index: ClipIndex, split: str, where: str | Path) -> None:
    """Training needs labelled clips of at least 2 classes in its split: fewer fails as one line naming the
    dataset file `where` and the one class it holds (not as the model config's "num_classes >= 2")."""
    present = sorted({c.label for c in index.split(split) if c.label is not None})
    if len(present) == 1:
        raise InputError(where, f"the {split} split has 1 class (label {index.classes[present[0]]!r}); training "
                                "needs at least 2")


MAX_MISSING = 0.01  # the share of a split's clips that may lack cached inputs before train/eval refuse


def check_coverage(index: ClipIndex, split: str, available: set[str], source: str | Path,
                   allow_missing: bool = False, limit: float = MAX_MISSING) -> str:
    """One line saying how many of the split's clips have cached inputs (tubes or keypoints) in `available`.

    Raises InputError naming `source` (the dataset file) when more than `limit` of them are missing, unless
    `allow_missing`: training or scoring a part of a split without a word is a silent wrong answer."""
    wanted = [item_name(c) for c in index.split(split)]
    absent = [n for n in wanted if n not in available]
    line = f"split {split!r}: {len(wanted) - len(absent)} of {len(wanted)} clips have cached inputs"
    if absent:
        line += f" ({len(absent)} missing, e.g. {absent[0]!r})"
    if absent and not allow_missing and len(absent) > limit * len(wanted):
        raise InputError(source, f"{line}; more than {limit:.0%} missing: run extract/tubes on them first, or "
                                 "pass --allow-missing")
    return line


def labelled_clips(index: ClipIndex, split: str, available: set[str], fine_to_coarse: bool = True,
                   unlabelled: bool = False):
    """The clips of one split that have tubes (or keypoints) in `available`, as LabelledClips.

    With `unlabelled`, clips without a label (MA-52's test split) are kept with label -1. Returns None when no
    clip qualifies."""
    from pipelines.data.clips import LabelledClips

    clips = [c for c in index.split(split) if item_name(c) in available]
    if unlabelled:
        return LabelledClips(tuple(item_name(c) for c in clips),
                             tuple(-1 if c.label is None else c.label for c in clips)) if clips else None
    clips = [c for c in clips if c.label is not None]
    if not clips:
        return None
    coarse = tuple(c.coarse for c in clips) if fine_to_coarse and all(c.coarse is not None for c in clips) else None
    return LabelledClips(tuple(item_name(c) for c in clips), tuple(c.label for c in clips), coarse)
