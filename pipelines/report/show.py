"""`dualnet show`: one PNG of a clip's cached tubes, for people to check what the model will see.

Top: sampled frames with the skeleton and the entity boxes drawn. Below: one row per entity, its crops across time
(a dashed frame marks samples where the entity was not visible and its box was inferred).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dualnet.layouts import get_layout
from pipelines.formats.tube_packs import TubeSet, global_view
from pipelines.io.video import iter_frames

ENTITY_COLOURS = ("#e6194b", "#f58231", "#3cb44b", "#4363d8", "#911eb4", "#42d4f4")


def render_clip(tubes: TubeSet, name: str, out: str | Path, context_frames: int = 4, tube_columns: int = 8) -> Path:
    """Write the picture of clip `name` to `out` (PNG) and return its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    arrays = tubes.load(name)
    meta = arrays["meta"]
    layout = get_layout(meta["layout"])
    f, k = arrays["visible"].shape
    entities = tubes.entities
    shown = np.linspace(0, f - 1, context_frames).round().astype(int)
    columns = np.linspace(0, f - 1, min(tube_columns, f)).round().astype(int)
    source_path = tubes.store.stage("extract", tubes.manifest["inputs"].get("extract", "")).path
    frames = _source_frames(tubes, name, arrays["frame_index"][shown]) if source_path.exists() else None

    ncols = max(context_frames, len(columns))
    top = 1.3 * ncols / context_frames * meta["height"] / meta["width"]  # context frames keep their aspect
    fig = plt.figure(figsize=(1.3 * ncols, top + 1.3 * k + 0.4))
    grid = fig.add_gridspec(1 + k, ncols, height_ratios=[top] + [1.3] * k, hspace=0.1, wspace=0.05)
    for c, s in enumerate(shown):
        ax = fig.add_subplot(grid[0, c * ncols // context_frames: (c + 1) * ncols // context_frames])
        image = frames[c] if frames is not None else np.transpose(arrays["frames"][s], (1, 2, 0))
        scale, pad_x, pad_y = (1.0, 0, 0) if frames is not None else global_view(meta)
        ax.imshow(image)
        kp = arrays["keypoints"][s]
        ok = (kp[:, 2] >= 0.3) & np.isfinite(kp[:, :2]).all(axis=1)
        for a, b in layout.edges:
            if ok[a] and ok[b]:
                ax.plot(kp[[a, b], 0] * scale + pad_x, kp[[a, b], 1] * scale + pad_y, color="white", lw=0.7)
        for e in range(k):
            x1, y1, x2, y2 = arrays["boxes"][s, e] * scale + np.array([pad_x, pad_y, pad_x, pad_y])
            ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, lw=1.2, color=ENTITY_COLOURS[e % 6],
                                   ls="-" if arrays["visible"][s, e] else "--"))
        ax.set_title(f"frame {arrays['frame_index'][s]}", fontsize=8)
        ax.axis("off")
    for e in range(k):
        for c, s in enumerate(columns):
            ax = fig.add_subplot(grid[1 + e, c])
            ax.imshow(np.transpose(arrays["tubes"][s, e], (1, 2, 0)))
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_color(ENTITY_COLOURS[e % 6])
                spine.set_linewidth(1.5)
                spine.set_linestyle("-" if arrays["visible"][s, e] else "--")
            if c == 0:
                ax.set_ylabel(entities[e].replace("_", " "), fontsize=8)
    fig.suptitle(f"{name}: {k} entity tubes over {f} sampled frames", fontsize=10)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80, bbox_inches="tight")
    plt.close(fig)
    return out


def _source_frames(tubes: TubeSet, name: str, indices: np.ndarray) -> list[np.ndarray] | None:
    """The full-resolution source frames at `indices`, or None when the video is no longer where it was."""
    from pipelines.formats.keypoints import KeypointSet

    try:
        kps = KeypointSet(tubes.store, key=tubes.manifest["inputs"]["extract"])
        path = kps.attributes(name)["source_path"]
        wanted = {int(i) for i in indices}
        frames = {i: rgb for i, (_, rgb) in enumerate(iter_frames(path)) if i in wanted}
        return [frames[int(i)] for i in indices]
    except Exception:  # the picture still works from the cached global frames
        return None
