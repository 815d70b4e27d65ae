"""`review.html`: one video's predicted segments (and, where a lab annotated it, the annotated ones) on a time axis
beside the video, in one self-contained file: no server, no CDN, inline CSS and JS, so it opens from disk offline.

The video is linked by its path relative to the page (the results folder can move together with the videos'
folder). A segment is coloured by its label and shows its score; a click seeks the video to its start; the segment
under the playhead is outlined while the video plays. Below, a table per label: predicted segments, seconds and mean
score, and with annotations the annotated counts and seconds and the segments matched at an IoU (`agreement.py`).
"""

from __future__ import annotations

import html
import math
import os
from pathlib import Path

import pandas as pd

from pipelines.report.annotations import NO_SUBJECT

PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf",
           "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#dbdb8d", "#9edae5"]
NOBODY_COLOUR = "#c8c8c8"

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
video { max-width: 100%; max-height: 50vh; background: #000; display: block; }
.timeline { position: relative; margin: 1em 0 0.5em 7em; }
.row { position: relative; height: 2.2em; margin-bottom: 0.3em; }
.row .name { position: absolute; left: -7em; width: 6.5em; top: 0.5em; font-size: 0.85em; text-align: right; }
.track { position: absolute; inset: 0; background: #f3f3f3; }
.seg { position: absolute; top: 0; bottom: 0; overflow: hidden; white-space: nowrap; font-size: 0.7em; color: #fff;
       cursor: pointer; box-sizing: border-box; border-right: 1px solid #fff; padding: 0.2em; line-height: 1.2; }
.seg.current { outline: 3px solid #000; outline-offset: -3px; z-index: 2; }
.axis { position: relative; height: 1.2em; font-size: 0.7em; color: #666; }
.axis span { position: absolute; transform: translateX(-50%); }
#playhead { position: absolute; top: 0; bottom: 1.2em; width: 2px; background: #000; pointer-events: none; z-index: 3; }
table { border-collapse: collapse; margin-top: 1em; font-size: 0.9em; }
th, td { padding: 0.2em 0.7em; border-bottom: 1px solid #ddd; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.swatch { display: inline-block; width: 0.8em; height: 0.8em; margin-right: 0.4em; vertical-align: middle; }
"""

SCRIPT = """
const video = document.getElementById('video');
const segments = Array.from(document.querySelectorAll('.seg'));
const playhead = document.getElementById('playhead');
const duration = Number(document.querySelector('.timeline').dataset.duration);
for (const seg of segments) {
  seg.addEventListener('click', () => { video.currentTime = Number(seg.dataset.start); });
}
function highlight() {
  const t = video.currentTime;
  for (const seg of segments) {
    seg.classList.toggle('current', t >= Number(seg.dataset.start) && t < Number(seg.dataset.end));
  }
  playhead.style.left = (100 * Math.min(t, duration) / duration) + '%';
}
for (const event of ['timeupdate', 'seeked', 'loadedmetadata']) video.addEventListener(event, highlight);
highlight();
"""


def colours(labels: list[str]) -> dict[str, str]:
    """A colour per label, the same on both tracks: labels sorted, the palette in turn; (nobody) grey."""
    named = sorted({str(label) for label in labels if label != NO_SUBJECT})
    out = {label: PALETTE[i % len(PALETTE)] for i, label in enumerate(named)}
    out[NO_SUBJECT] = NOBODY_COLOUR
    return out


def _track(name: str, segments: pd.DataFrame, duration: float, palette: dict[str, str]) -> str:
    cells = []
    for row in segments.itertuples():
        score = getattr(row, "score", math.nan)
        has_score = score is not None and not (isinstance(score, float) and math.isnan(score))
        text = f"{row.label} {score:.2f}" if has_score else str(row.label)
        title = f"{text} ({row.start_s:.2f}-{row.end_s:.2f} s)"
        left, width = 100 * row.start_s / duration, 100 * (row.end_s - row.start_s) / duration
        cells.append(f'<div class="seg" data-track="{html.escape(name)}" data-label="{html.escape(str(row.label))}" '
                     f'data-start="{row.start_s:.3f}" data-end="{row.end_s:.3f}" title="{html.escape(title)}" '
                     f'style="left:{left:.4f}%;width:{width:.4f}%;background:{palette[str(row.label)]}">'
                     f'{html.escape(text)}</div>')
    return (f'<div class="row"><span class="name">{html.escape(name)}</span><div class="track" '
            f'id="track-{html.escape(name)}">{"".join(cells)}</div></div>')


def _axis(duration: float) -> str:
    step = next(s for s in (0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600) if duration / s <= 12)
    ticks = [i * step for i in range(int(duration // step) + 1)]
    return '<div class="axis">' + "".join(f'<span style="left:{100 * t / duration:.4f}%">{t:g} s</span>'
                                          for t in ticks) + "</div>"


def summary_rows(timeline: pd.DataFrame, truth: pd.DataFrame | None, agreement: pd.DataFrame | None,
                 duration: float) -> pd.DataFrame:
    """The page's table: per label, predicted segments, seconds, rate per minute and mean score; with annotations
    their count and seconds; with an agreement table its matched segments, precision and recall."""
    predicted = timeline.assign(seconds=timeline["end_s"] - timeline["start_s"])
    if "score" not in predicted.columns:
        predicted["score"] = math.nan
    table = predicted.groupby("label").agg(predicted=("label", "size"), predicted_s=("seconds", "sum"),
                                           mean_score=("score", "mean"))
    table["per_min"] = table["predicted"] / max(duration / 60, 1e-9)
    if truth is not None:
        annotated = truth.assign(seconds=truth["end_s"] - truth["start_s"]).groupby("label").agg(
            annotated=("label", "size"), annotated_s=("seconds", "sum"))
        table = table.join(annotated, how="outer")
        table[["predicted", "annotated"]] = table[["predicted", "annotated"]].fillna(0).astype(int)
        table[["predicted_s", "annotated_s"]] = table[["predicted_s", "annotated_s"]].fillna(0.0)
        table["per_min"] = table["predicted"] / max(duration / 60, 1e-9)
    if agreement is not None:
        table = table.join(agreement.set_index("label")[["matched", "precision", "recall"]], how="left")
    return table.reset_index()


def _cell(value) -> str:
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.2f}"
    return html.escape(str(value))


def render_review(name: str, video: str | Path, page: str | Path, timeline: pd.DataFrame, duration_s: float,
                  truth: pd.DataFrame | None = None, agreement: pd.DataFrame | None = None) -> str:
    """The review page's HTML for the page at `page` (the video linked relative to it)."""
    duration = max(float(duration_s), 1e-3)
    relative = Path(os.path.relpath(Path(video).resolve(), Path(page).resolve().parent)).as_posix()
    labels = list(timeline["label"]) + (list(truth["label"]) if truth is not None else [])
    palette = colours(labels)
    tracks = _track("predicted", timeline, duration, palette)
    if truth is not None:
        tracks += _track("annotated", truth.assign(score=math.nan), duration, palette)
    table = summary_rows(timeline, truth, agreement, duration)
    headers = "".join(f"<th>{html.escape(c.replace('_', ' '))}</th>" for c in table.columns)
    body = "".join("<tr>" + "".join(
        (f'<td><span class="swatch" style="background:{palette.get(str(v), NOBODY_COLOUR)}"></span>'
         f"{html.escape(str(v))}</td>") if c == "label" else f"<td>{_cell(v)}</td>"
        for c, v in row.items()) + "</tr>" for row in table.to_dict("records"))
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>review: {html.escape(name)}</title>'
            f"<style>{STYLE}</style></head><body>\n<h1>{html.escape(name)}</h1>\n"
            f'<video id="video" controls preload="auto" src="{html.escape(relative)}"></video>\n'
            f'<div class="timeline" data-duration="{duration:.3f}">{tracks}{_axis(duration)}'
            f'<div id="playhead"></div></div>\n<p>Click a segment to play from its start.</p>\n'
            f'<table id="summary"><thead><tr>{headers}</tr></thead><tbody>{body}</tbody></table>\n'
            f"<script>{SCRIPT}</script>\n</body></html>\n")


def write_review(name: str, video: str | Path, path: str | Path, timeline: pd.DataFrame, duration_s: float,
                 truth: pd.DataFrame | None = None, agreement: pd.DataFrame | None = None) -> Path:
    """Write `render_review`'s page to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_review(name, video, path, timeline, duration_s, truth, agreement), encoding="utf-8")
    return path
