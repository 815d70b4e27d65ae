"""The evaluation report: ``report.md`` and a self-contained ``report.html`` (PNGs embedded), with the metrics
table, training curves, a confusion matrix, per-class F1 sorted, and, per class, each entity's mean routing weight
towards the ST path (the picture the paper is about: which body parts prefer which order)."""

from __future__ import annotations

import base64
import html
from pathlib import Path

import numpy as np
import pandas as pd


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(history: list[dict], path: Path) -> Path | None:
    if not history:
        return None
    plt = _figure()
    df = pd.DataFrame(history)
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.2))
    ax[0].plot(df["epoch"], df["train_loss"], marker="o")
    ax[0].set(xlabel="epoch", ylabel="training loss", title="loss")
    for col in ("val_top1", "val_top5"):
        if col in df:
            ax[1].plot(df["epoch"], 100 * df[col], marker="o", label=col.replace("val_", "val "))
    ax[1].set(xlabel="epoch", ylabel="%", title="validation")
    if ax[1].lines:
        ax[1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_confusion(labels: np.ndarray, pred: np.ndarray, classes: list[str], path: Path) -> Path:
    plt = _figure()
    n = len(classes)
    matrix = np.zeros((n, n))
    np.add.at(matrix, (labels, pred), 1)
    rows = matrix.sum(axis=1, keepdims=True)
    shown = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)
    size = max(4.0, 0.18 * n + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    im = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1)
    ticks = np.arange(n)
    ax.set_xticks(ticks, classes, rotation=90, fontsize=6 if n > 20 else 8)
    ax.set_yticks(ticks, classes, fontsize=6 if n > 20 else 8)
    ax.set(xlabel="predicted", ylabel="true", title="confusion (row-normalised)")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_per_class_f1(table: pd.DataFrame, path: Path) -> Path:
    plt = _figure()
    t = table.sort_values("f1")
    fig, ax = plt.subplots(figsize=(6, max(2.5, 0.2 * len(t) + 1)))
    ax.barh(t["class"], 100 * t["f1"], color="#4363d8")
    ax.set(xlabel="F1 (%)", title="per-class F1, sorted")
    ax.tick_params(axis="y", labelsize=6 if len(t) > 20 else 8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_routing(routing: np.ndarray, labels: np.ndarray, classes: list[str], entities: list[str],
                 path: Path) -> Path:
    """Heatmap: rows are classes, columns entities, colour the mean a_ST (1 = all ST, 0 = all TS)."""
    plt = _figure()
    present = np.unique(labels)
    mean_st = np.stack([routing[labels == c, :, 0].mean(axis=0) for c in present])  # (classes, K)
    fig, ax = plt.subplots(figsize=(1.0 * len(entities) + 3, max(2.5, 0.22 * len(present) + 1.5)))
    im = ax.imshow(mean_st, cmap="coolwarm", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(np.arange(len(entities)), [e.replace("_", " ") for e in entities], rotation=30)
    ax.set_yticks(np.arange(len(present)), [classes[c] for c in present], fontsize=6 if len(present) > 20 else 8)
    ax.set_title("mean routing weight towards ST (red) vs TS (blue)")
    fig.colorbar(im, ax=ax, fraction=0.046, label="a_ST")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def write_report(out_dir: Path, title: str, metrics: dict[str, float], table: pd.DataFrame, figures: dict[str, Path],
                 notes: list[str]) -> tuple[Path, Path]:
    """Write report.md (figures linked) and report.html (figures embedded); returns both paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    metric_rows = [(k, f"{100 * v:.2f}") for k, v in metrics.items()]
    md = [f"# {title}", "", *notes, "", "## Metrics", "", "| metric | % |", "| --- | --- |"]
    md += [f"| {k} | {v} |" for k, v in metric_rows]
    for name, fig in figures.items():
        md += ["", f"## {name}", "", f"![{name}]({fig.name})"]
    md += ["", "## Per-class precision / recall / F1", "", table.to_markdown(index=False, floatfmt=".3f")
           if _has_tabulate() else table.to_string(index=False)]
    md_path = out_dir / "report.md"
    md_path.write_text("\n".join(md) + "\n")

    def img(path: Path) -> str:
        data = base64.b64encode(path.read_bytes()).decode()
        return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'

    parts = [f"<h1>{html.escape(title)}</h1>", *(f"<p>{html.escape(n)}</p>" for n in notes), "<h2>Metrics</h2>",
             "<table><tr><th>metric</th><th>%</th></tr>",
             *(f"<tr><td>{html.escape(k)}</td><td>{v}</td></tr>" for k, v in metric_rows), "</table>"]
    for name, fig in figures.items():
        parts += [f"<h2>{html.escape(name)}</h2>", img(fig)]
    parts += ["<h2>Per-class precision / recall / F1</h2>", table.to_html(index=False, float_format="%.3f")]
    style = "body{font-family:sans-serif;max-width:1100px;margin:2em auto}td,th{padding:2px 8px}img{max-width:100%}"
    html_path = out_dir / "report.html"
    html_path.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
                         f"<style>{style}</style></head><body>{''.join(parts)}</body></html>\n")
    return md_path, html_path


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True
