"""Markdown tables of the figures, printed at the end and written to RESULTS.md."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence

from benchmarks.stats import Figure, Stat
from benchmarks.targets import check_targets, render_targets

__all__ = ["NOISE_WARNING", "render_results", "render_tables"]

NOISE_WARNING = (
    "This machine has 2 cores shared by the load generator, the process under test, "
    "PostgreSQL and Redis, and other work runs on it at the same time, so the figures "
    "are noisy: compare ratios measured in the same run, not absolute numbers across runs."
)


def _number(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _spread(stat: Stat | None, *, ratio: bool = False) -> str:
    if stat is None:
        return ""
    show = (lambda v: f"{v:.2f}") if ratio else _number
    return f"{show(stat.median)} ({show(stat.low)}–{show(stat.high)})"


def _table(figures: Sequence[Figure]) -> list[str]:
    """Render a table; the ceiling and ratio columns appear only when a figure has them."""
    with_ceiling = any(figure.ceiling is not None for figure in figures)
    header = "| figure | unit | median | min | max |"
    rule = "|---|---|---:|---:|---:|"
    if with_ceiling:
        header += " ceiling: median (min–max) | ratio to ceiling: median (min–max) |"
        rule += "---:|---:|"
    lines = [header + " note |", rule + "---|"]
    for figure in figures:
        row = (
            f"| {figure.name} | {figure.unit} | {_number(figure.stat.median)} "
            f"| {_number(figure.stat.low)} | {_number(figure.stat.high)} |"
        )
        if with_ceiling:
            row += f" {_spread(figure.ceiling)} | {_spread(figure.ratio, ratio=True)} |"
        lines.append(row + f" {figure.note} |")
    return lines


def render_tables(figures: Sequence[Figure], notes: dict[str, str]) -> str:
    """Render one Markdown table per section, each followed by the section's notes."""
    lines: list[str] = []
    sections = list(dict.fromkeys(figure.section for figure in figures))
    for section in sections:
        lines.append(f"### {section}")
        lines.append("")
        lines.extend(_table([figure for figure in figures if figure.section == section]))
        if notes.get(section):
            lines.append("")
            lines.append(notes[section])
        lines.append("")
    return "\n".join(lines)


def render_results(
    *,
    command: str,
    plan_text: str,
    machine: Sequence[tuple[str, str]],
    load_before: str,
    load_after: str,
    figures: Sequence[Figure],
    notes: dict[str, str],
    method: str,
) -> str:
    """Render the whole RESULTS.md page."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    machine_lines = [f"- {name}: {value}" for name, value in machine]
    return "\n".join(
        [
            "# Benchmark results",
            "",
            f"Written by `{command}` on {stamp}; run the same command to regenerate this page.",
            "",
            "## Machine",
            "",
            *machine_lines,
            f"- load average (1, 5, 15 min): {load_before} before, {load_after} after",
            "",
            NOISE_WARNING,
            "",
            "## Method",
            "",
            f"Plan: {plan_text}.",
            "",
            method,
            "",
            "## Results",
            "",
            "Each figure is the median of the repetitions, with their min and max. A ratio is "
            "the figure divided by its ceiling, computed repetition by repetition.",
            "",
            "### Targets",
            "",
            "Each measured ratio divides two medians of the tables below. The end-to-end "
            "measurement fails unless every accepted event is counted in its run's score, so "
            "a figure there means nothing was lost.",
            "",
            *render_targets(check_targets(figures)),
            "",
            render_tables(figures, notes),
        ]
    )
