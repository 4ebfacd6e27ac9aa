"""The pictures of a benchmark report (matplotlib, Agg backend): validation curves and
per-layer LR heat maps per condition, interval estimates and performance profiles overall.

Why a module of its own: plotting needs matplotlib and reads the summary plus the runs
behind it (`benchmarks.summary.Summarised`); the numbers never depend on it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import stats
from benchmarks.summary import CONFIDENCE, ORACLE, Runs, as_float

__all__ = ["write_plots"]

HEATMAP_BASELINES = ("constant", "cosine", "bold_driver", "lars", ORACLE)


def _hand_made() -> set[str]:
    try:
        from ganno_env.controllers import HAND_MADE
    except ImportError:  # pragma: no cover - the package is always installed with benchmarks
        return set()
    return set(HAND_MADE)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _colours(controllers: list[str]) -> dict[str, Any]:
    plt = _pyplot()
    cmap = plt.get_cmap("tab20")
    return {c: cmap(i % 20) for i, c in enumerate(controllers)}


def _style(controllers: list[str], ctrl: str) -> str:
    """Line style: dashed for the oracle; tab20 pairs (dark, light) told apart by dash-dot."""
    if ctrl == ORACLE:
        return "--"
    return "-" if controllers.index(ctrl) % 2 == 0 else "-."


def _curve_subset(controllers: list[str], reference: str, limit: int = 20) -> list[str]:
    """Readable subset: the reference and its relatives, the oracle, the hand-made ones."""
    if len(controllers) <= limit:
        return list(controllers)
    hand = _hand_made()
    first = [c for c in controllers if c.startswith(reference) or c == ORACLE or c in hand]
    rest = [c for c in controllers if c not in first]
    return (first + rest)[:limit]


def _padded(curves: list[list[Any]]) -> np.ndarray:
    """[runs, points]; a run that stopped early (diverged) holds its last value."""
    n = max(len(c) for c in curves)
    out = np.full((len(curves), n), np.nan)
    for i, c in enumerate(curves):
        v = np.array([as_float(x) for x in c], dtype=float)
        if v.size:
            out[i, : v.size] = v
            out[i, v.size :] = v[-1]
    return out


def _save(fig, path: Path) -> None:
    plt = _pyplot()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def _plot_curves(summary: dict, runs: Runs, cond: str, path: Path, colours: dict) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 5))
    shown = _curve_subset(
        [c for c in summary["controllers"] if c in summary["per_condition"][cond]],
        summary["reference"],
    )
    drew = False
    for ctrl in shown:
        chosen = runs.records(cond, ctrl, summary["seeds"][cond])
        curves = [r.get("val_curve") or [] for r in chosen]
        if not any(curves):
            continue
        y = _padded([c for c in curves if c])
        y = np.where(y > 0, y, np.nan)  # log axis
        interval = int(chosen[0].get("interval") or 1)
        x = np.arange(y.shape[1]) * interval
        with np.errstate(all="ignore"), _quiet():
            mid = np.nanmedian(y, axis=0)
            lo, hi = np.nanpercentile(y, [25, 75], axis=0)
        style = _style(summary["controllers"], ctrl)
        ax.plot(x, mid, style, color=colours[ctrl], lw=1.6, label=ctrl)
        ax.fill_between(x, lo, hi, color=colours[ctrl], alpha=0.15, lw=0)
        drew = True
    if drew:
        ax.set_yscale("log")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    else:
        ax.text(0.5, 0.5, "no validation curves", ha="center", va="center")
    lr = summary["oracle_lr"].get(cond)
    extra = f", oracle LR {lr:g}" if lr is not None else ""
    ax.set(
        xlabel="inner training steps",
        ylabel="validation loss (log)",
        title=f"{cond}: median over {len(summary['seeds'][cond])} seeds, 25-75% band{extra}",
    )
    ax.grid(True, which="both", alpha=0.3)
    _save(fig, path)


class _quiet:
    """Silence numpy's all-NaN-slice warnings inside plotting."""

    def __enter__(self):
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)


def schedule_matrix(record: dict) -> np.ndarray:
    """log10 LR as [layers, decisions] from a record's lr_schedule [decisions][layers]."""
    sched = np.array(
        [[as_float(x) for x in row] for row in record.get("lr_schedule") or []], dtype=float
    )
    if sched.ndim != 2 or sched.size == 0:
        return np.empty((0, 0))
    with np.errstate(divide="ignore", invalid="ignore"):
        logged = np.log10(sched)
    return np.where(np.isfinite(logged), logged, np.nan).T


def _plot_heatmaps(summary: dict, runs: Runs, cond: str, path: Path) -> None:
    plt = _pyplot()
    ref = summary["reference"]
    wanted = [ref, *HEATMAP_BASELINES]
    panels = []
    for ctrl in wanted:
        if ctrl not in summary["per_condition"][cond]:
            continue
        first = summary["seeds"][cond][0]
        m = schedule_matrix(runs.by_seed(cond, ctrl)[first])
        if m.size:
            panels.append((ctrl, first, m))
    fig, axes = plt.subplots(
        max(len(panels), 1), 1, figsize=(9, 1.2 + 1.3 * max(len(panels), 1)), squeeze=False
    )
    if not panels:
        axes[0, 0].text(0.5, 0.5, "no LR schedules", ha="center", va="center")
        axes[0, 0].set_axis_off()
        _save(fig, path)
        return
    values = np.concatenate([m[np.isfinite(m)] for _, _, m in panels] or [np.zeros(1)])
    vmin, vmax = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
    if vmin == vmax:
        vmin, vmax = vmin - 0.5, vmax + 0.5
    width = max(m.shape[1] for _, _, m in panels)
    image = None
    for ax, (ctrl, first, m) in zip(axes[:, 0], panels):
        image = ax.imshow(
            m, aspect="auto", cmap="viridis", vmin=vmin, vmax=vmax, interpolation="nearest",
            extent=(-0.5, m.shape[1] - 0.5, m.shape[0] - 0.5, -0.5),
        )  # fmt: skip
        ax.set_xlim(-0.5, width - 0.5)
        stopped = " (stopped: diverged)" if m.shape[1] < width else ""
        ax.set_title(f"{ctrl}, seed {first}{stopped}", fontsize=9, loc="left")
        ax.set_ylabel("layer")
        ax.set_yticks(range(m.shape[0]))
        ax.tick_params(labelsize=7)
    axes[-1, 0].set_xlabel("decision")
    fig.suptitle(f"{cond}: per-layer learning rate (log10)", fontsize=11)
    fig.tight_layout()
    fig.colorbar(image, ax=list(axes[:, 0]), label="log10 LR", fraction=0.03, pad=0.02)
    _save(fig, path)


def _finite(xs: Sequence[Any]) -> bool:
    return all(x is not None and math.isfinite(float(x)) for x in xs)


def _plot_intervals(summary: dict, path: Path, colours: dict) -> None:
    plt = _pyplot()
    names = [c for c in summary["controllers"] if "iqm_test_loss" in summary["overall"][c]]
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.9 + 0.4 * max(len(names), 1)), sharey=True)
    panels = (("iqm_test_loss", "IQM test loss (lower is better)"),
              ("normalized_score", "IQM normalised score (1 = oracle, 0 = initial)"))  # fmt: skip
    for ax, (key, label) in zip(axes, panels):
        skipped = []
        for i, ctrl in enumerate(names):
            triple = summary["overall"][ctrl].get(key)
            if not triple or not _finite(triple):
                skipped.append(ctrl)
                continue
            p, lo, hi = triple
            ax.barh(i, hi - lo, left=lo, height=0.6, color=colours[ctrl], alpha=0.75)
            ax.plot([p, p], [i - 0.3, i + 0.3], color="black", lw=1.5)
        if key == "normalized_score":
            for v in (0.0, 1.0):
                ax.axvline(v, color="grey", ls=":", lw=1)
        if skipped:
            ax.text(0.99, 0.01, f"not finite: {', '.join(skipped)}", transform=ax.transAxes,
                    ha="right", va="bottom", fontsize=7)  # fmt: skip
        ax.set_xlabel(label)
        ax.grid(True, axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(names)), names)
    axes[0].invert_yaxis()
    if not names:
        axes[0].text(0.5, 0.5, "no overall aggregates", ha="center", va="center")
    fig.suptitle(
        f"{summary['suite']}: IQM with 95% stratified-bootstrap CI (black: point estimate)",
        fontsize=11,
    )
    fig.tight_layout()
    _save(fig, path)


def _plot_profiles(
    summary: dict, matrices: dict[str, np.ndarray], path: Path, colours: dict, reps: int, seed: int
) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 5))
    every = np.concatenate([m.ravel() for m in matrices.values()]) if matrices else np.zeros(0)
    positive = every[np.isfinite(every) & (every > 0)]
    if positive.size:
        lo, hi = float(positive.min()), float(positive.max())
        if lo == hi:
            lo, hi = lo / 2, hi * 2
        taus = np.geomspace(lo / 1.1, hi * 1.1, 200)
        for ctrl, m in matrices.items():
            p, low, high = stats.performance_profile_ci(m, taus, True, reps, CONFIDENCE, seed)
            style = _style(summary["controllers"], ctrl)
            ax.step(taus, p, style, where="post", color=colours[ctrl], lw=1.6, label=ctrl)
            ax.fill_between(taus, low, high, step="post", color=colours[ctrl], alpha=0.08, lw=0)
        ax.set_xscale("log")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    else:
        ax.text(0.5, 0.5, "no finite test losses", ha="center", va="center")
    ax.set(
        xlabel="test loss threshold tau (log)",
        ylabel="fraction of runs with test loss <= tau",
        ylim=(-0.02, 1.02),
        title=f"{summary['suite']}: performance profiles over all conditions (95% CI bands)",
    )
    ax.grid(True, which="both", alpha=0.3)
    _save(fig, path)


def write_plots(
    summary: dict, runs: Runs, matrices: dict[str, np.ndarray], out: Path, reps: int, seed: int
) -> dict[str, str]:
    """Draw every plot of the report under `out`/plots; returns label -> path relative to
    `out` (for report.md and summary.json)."""
    colours = _colours(summary["controllers"])
    plots: dict[str, str] = {}
    for cond in summary["conditions"]:
        name = f"plots/curves_{cond}.png"
        _plot_curves(summary, runs, cond, out / name, colours)
        plots[f"validation curves, {cond}"] = name
    for cond in summary["conditions"]:
        name = f"plots/lr_heatmap_{cond}.png"
        _plot_heatmaps(summary, runs, cond, out / name)
        plots[f"per-layer LR schedules, {cond}"] = name
    _plot_intervals(summary, out / "plots/intervals.png", colours)
    plots["interval estimates"] = "plots/intervals.png"
    _plot_profiles(summary, matrices, out / "plots/profiles.png", colours, reps, seed)
    plots["performance profiles"] = "plots/profiles.png"
    return plots
