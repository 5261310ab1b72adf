"""The pictures `analyze` writes: each 1000 x 500 pixels, with a title and axis labels with units.

Every plot against steps has the stage strip on top (each stage's number, as in dynamics.STAGES, over its
steps) and, in the right margin, the stage key (one entry per stage name present, so it fits however many
times the run changes stage: at most six names) above the key of the curves.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from med_rlvr_plugin.dynamics import CLASSES, STAGES, Stage
from med_rlvr_plugin.files import png_bytes

FIGURE_SIZE, DPI = (10, 5), 100  # every PNG is 1000 x 500 pixels
CLASS_COLORS = ("#9e9e9e", "#8e44ad", "#e74c3c", "#f39c12", "#27ae60")  # in CLASSES order
STAGE_COLORS = ("#e0e0e0", "#fdd9a0", "#c7e9c0", "#f6b2a8", "#d7bde2", "#aed6f1")  # in STAGES order
_PLOT_AREA = (0, 0, 0.77, 1)  # the right 23% holds the keys


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _label(key: str) -> str:
    return key.removeprefix("behaviour_").replace("_", " ")


def step_figure(title: str, stages: Sequence[Stage], axis: str, panels: int):
    """A figure with the stage strip over `panels` panels sharing the step axis, the stage boundaries drawn
    across the panels and the stage key in the margin; returns (figure, panels). evaluate's steps plot
    uses it too."""
    plt = pyplot()
    from matplotlib.patches import Patch

    figure, (strip, *axes) = plt.subplots(
        1 + panels, 1, figsize=FIGURE_SIZE, sharex=True, gridspec_kw={"height_ratios": [1] + [7 // panels] * panels}
    )
    figure.suptitle(title)
    # Stages touch: each boundary halfway between one stage's last logged step and the next one's first.
    for index, stage in enumerate(stages):
        number = STAGES.index(stage.name) + 1
        left = (stages[index - 1].last_step + stage.first_step) / 2 if index else stage.first_step - 0.5
        right = (
            (stage.last_step + stages[index + 1].first_step) / 2 if index + 1 < len(stages) else stage.last_step + 0.5
        )
        strip.axvspan(left, right, color=STAGE_COLORS[number - 1])
        strip.text((left + right) / 2, 0.5, str(number), ha="center", va="center", fontweight="bold")
        for panel in axes:
            panel.axvline(left, color="black", linewidth=0.6)
    strip.set_yticks([])
    strip.set_ylabel("stage", rotation=0, ha="right", va="center")
    names = sorted({STAGES.index(stage.name) for stage in stages})
    key = [Patch(color=STAGE_COLORS[index], label=f"{index + 1} {STAGES[index]}") for index in names]
    figure.legend(handles=key, title="stages", loc="upper left", bbox_to_anchor=(0.78, 0.9), fontsize="small")
    unit = (
        "equal parts of the samples' time span, no TensorBoard events"
        if axis == "time bin"
        else "OpenRLHF global step"
    )
    axes[-1].set_xlabel(f"{axis} ({unit})")
    return figure, axes


def finish_figure(figure, handles: Sequence, title: str) -> bytes:
    """The key of the curves in the right margin, the layout, the PNG."""
    figure.legend(handles=handles, title=title, loc="lower left", bbox_to_anchor=(0.78, 0.08), fontsize="small")
    figure.tight_layout(rect=_PLOT_AREA)
    return png_bytes(figure, DPI)


def plot_behaviour(series: Sequence, stages: Sequence[Stage], axis: str) -> bytes:
    """Class shares as a stacked area, under the stage strip."""
    figure, (axes,) = step_figure("Behaviour classes per step, and the stages", stages, axis, 1)
    xs = [x for x, _ in series]
    areas = axes.stackplot(
        xs,
        *([values.get(f"behaviour_{name}", 0.0) for _, values in series] for name in CLASSES),
        labels=[_label(name) for name in CLASSES],
        colors=CLASS_COLORS,
    )
    axes.set_ylim(0, 1)
    axes.set_xlim(min(xs) - 0.5, max(xs) + 0.5)
    axes.set_ylabel("share of responses (0-1)")
    return finish_figure(figure, areas[::-1], "classes")


def plot_lines(
    series: Sequence, title: str, stages: Sequence[Stage], axis: str, panels: Sequence[tuple[Sequence[str], str]]
) -> bytes:
    """One panel per (keys, y-axis label), one line per key present, under the stage strip."""
    figure, axes = step_figure(title, stages, axis, len(panels))
    handles = []
    for panel, (keys, unit) in zip(axes, panels, strict=True):
        for key in keys:
            points = [(x, values[key]) for x, values in series if key in values]
            if points:
                color = f"C{len(handles)}"  # one colour a curve across the panels, as in the key
                handles += panel.plot(*zip(*points, strict=True), marker=".", color=color, label=_label(key))
        panel.set_ylabel(unit)
    xs = [x for x, _ in series]
    axes[0].set_xlim(min(xs) - 0.5, max(xs) + 0.5)
    return finish_figure(figure, handles, "curves")


def plot_eval(evals: Sequence[Mapping]) -> bytes:
    """Per task, class shares per checkpoint (in `evals`' order) as stacked bars, and accuracy as black dots."""
    plt = pyplot()
    tasks = sorted({entry["task"] for entry in evals})
    figure, panels = plt.subplots(1, len(tasks), figsize=FIGURE_SIZE, squeeze=False, sharey=True)
    figure.suptitle("Behaviour classes and accuracy per checkpoint (lm-eval responses)")
    for panel, task in zip(panels[0], tasks, strict=True):
        entries = [entry for entry in evals if entry["task"] == task]
        names, bottom = [entry["checkpoint"] for entry in entries], [0.0] * len(entries)
        for kind, color in zip(CLASSES, CLASS_COLORS, strict=True):
            heights = [entry[f"behaviour_{kind}"] for entry in entries]
            panel.bar(names, heights, bottom=bottom, color=color, label=_label(kind))
            bottom = [low + height for low, height in zip(bottom, heights, strict=True)]
        panel.plot(names, [entry["accuracy"] for entry in entries], "ko", label="accuracy")
        panel.set_title(task, fontsize="small")
        panel.set_xlabel("checkpoint")
        panel.tick_params(axis="x", rotation=45, labelsize="small")
    panels[0, 0].set_ylabel("share of responses (0-1)")
    handles, labels = panels[0, -1].get_legend_handles_labels()
    figure.legend(handles[::-1], labels[::-1], loc="upper left", bbox_to_anchor=(0.78, 0.9), fontsize="small")
    figure.tight_layout(rect=_PLOT_AREA)
    return png_bytes(figure, DPI)
