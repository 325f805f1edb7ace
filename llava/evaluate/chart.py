"""Per-category accuracy chart: this run against the seed reproduction and the official model."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from llava.durable import write_bytes

SERIES = (  # key in a results row, legend label prefix, colour
    ("value", "this run", "#1f77b4"),
    ("seed", "seed", "#ff7f0e"),
    ("official", "official", "#7f7f7f"),
)


def write_chart(results: dict[str, Any], path: Path, *, n_abilities: int,
                labels: dict[str, str] | None = None) -> Path:
    """Horizontal grouped bars, one group per table row: Overall, `n_abilities` l2 rows, leaves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["rows"]
    series = [s for s in SERIES if any(r[s[0]] is not None for r in rows)]
    n_rows, n_series = len(rows), len(series)
    bar = 0.8 / n_series
    height = 1.6 + 0.12 * n_rows * max(n_series, 2)
    fig, ax = plt.subplots(figsize=(10, height), dpi=110)
    for k, (key, label, colour) in enumerate(series):
        ys = [i + (k - (n_series - 1) / 2) * bar for i in range(n_rows)]
        values = [100 * r[key] if r[key] is not None else 0.0 for r in rows]
        legend = (labels or {}).get(key, label)
        overall = next((r[key] for r in rows if r["name"] == "Overall" and r[key] is not None), None)
        if overall is not None:
            legend += f" (Overall {100 * overall:.1f}%)"
        ax.barh(ys, values, height=bar, color=colour, label=legend)
        if key == "value":
            for y, v in zip(ys, values):
                ax.text(v + 0.8, y, f"{v:.1f}", va="center", fontsize=7, color=colour)
    ax.set_yticks(range(n_rows), [r["name"] for r in rows], fontsize=8)
    ax.set_ylim(n_rows - 0.5, -0.5)  # table order top to bottom, no empty margins
    for boundary in (0.5, n_abilities + 0.5)[: 2 if n_abilities + 1 < n_rows else 1]:
        ax.axhline(boundary, color="black", linewidth=0.6, linestyle=":")  # Overall | abilities | leaves
    ax.set_xlim(0, 108)
    ax.set_xlabel("accuracy (%)")
    ax.grid(axis="x", alpha=0.3)
    fig.suptitle(f"{results['dataset']} ({results['split']}): {results['backend']} backend, "
                 f"{results['judge']}, {results['n_questions']} questions", fontsize=10, y=1 - 0.12 / height)
    fig.legend(loc="upper center", bbox_to_anchor=(0.5, 1 - 0.36 / height), ncol=n_series, fontsize=8,
               frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / height))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return write_bytes(path, buffer.getvalue())



def stage_losses(log_history: list[dict[str, Any]]) -> tuple[list[int], list[float]]:
    """(steps, losses) of the Trainer's logged training losses (its log_history.json)."""
    points = [(entry["step"], float(entry["loss"])) for entry in log_history if "loss" in entry and "step" in entry]
    return [s for s, _ in points], [v for _, v in points]


def write_loss_chart(stages: list[dict[str, Any]], path: Path, title: str) -> Path:
    """One panel per stage: the logged training loss by step, and the seed's final loss where given.

    Each stage: {"stage", "steps": [...], "losses": [...], "seed_loss": float | None}, optionally "label"
    (default "this run") and "reference": {"steps", "losses", "label"}, drawn dashed over it (reproduce).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(stages), figsize=(4.2 * len(stages), 3.4), dpi=110, squeeze=False)
    for ax, stage in zip(axes[0], stages):
        ax.plot(stage["steps"], stage["losses"], marker="o", markersize=3, color=SERIES[0][2],
                label=stage.get("label", "this run"))
        reference = stage.get("reference")
        if reference and reference["steps"]:
            ax.plot(reference["steps"], reference["losses"], marker="x", markersize=4, linestyle="--",
                    color=SERIES[1][2], label=reference["label"])
        if stage.get("seed_loss") is not None:
            ax.axhline(stage["seed_loss"], color=SERIES[1][2], linestyle="--",
                       label=f"seed final {stage['seed_loss']:.3f}")
        ax.set_title(stage["stage"], fontsize=10)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("training loss")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return write_bytes(path, buffer.getvalue())
