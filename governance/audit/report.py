"""A self-contained HTML audit report of one task: one file, plots embedded, nothing to fetch.

Sections: the replay verdict per version (when a replay result is given), the lineage of the latest
version, metrics per version as plots (the version's own metrics and the mean of the metrics the
domains reported with their updates), the rejected updates with the policy and reason, and the
differential-privacy budget spent per version when the task uses central DP.

Under central DP the report shows only what the mechanism covers: the versions' own metrics, never the
metrics or example counts the domains reported with their updates (they are outside the noise).
"""

from __future__ import annotations

import base64
import html
import io
from collections import defaultdict
from pathlib import Path
from typing import Any

from governance.audit.lineage import Lineage, lineage
from governance.audit.log import TaskLog
from governance.audit.result import ReplayResult
from meshfl.errors import ReplayError
from meshfl.events import ModelUpdate
from meshfl.extras import require

_STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:70em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}
th{background:#f3f3f3}.ok{color:#17702d;font-weight:600}.bad{color:#b00020;font-weight:600}
code{font-size:.9em}ul{margin:.2em 0}"""


def _e(value: object) -> str:
    return html.escape(str(value))


def _pyplot() -> Any:
    """matplotlib, loaded (headless) when a report is drawn: replay and lineage do not need it."""
    matplotlib = require("matplotlib", "plots")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(figure: Any) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    _pyplot().close(figure)
    return f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'


def _table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def update_metrics_by_version(index: TaskLog) -> dict[str, dict[int, float]]:
    """Per metric name, per version: the mean of what the contributing domains reported."""
    sums: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for number in index.versions:
        version = index.version(number)
        for update_id in version.contributing_updates if version else []:
            found, _ = index.accepted_update(update_id)
            if found is not None and isinstance(found.event, ModelUpdate):
                for name, value in found.event.metrics.items():
                    sums[name][number].append(value)
    return {name: {v: sum(xs) / len(xs) for v, xs in per.items()} for name, per in sorted(sums.items())}


def metric_series(index: TaskLog) -> dict[str, dict[int, float]]:
    """Per plotted series, per version: the versions' own metrics and, without DP, the domains' means.

    Under central DP the domains' own metrics are left out: they are not noised.
    """
    series: dict[str, dict[int, float]] = (
        {}
        if index.task.privacy is not None
        else {f"domains' {k}": v for k, v in update_metrics_by_version(index).items()}
    )
    for number in index.versions:
        version = index.version(number)
        for name, value in (version.metrics if version else {}).items():
            series.setdefault(name, {})[number] = value
    return {k: v for k, v in series.items() if v}


def metrics_plot(index: TaskLog) -> str:
    """The :func:`metric_series` against the version number, one panel each."""
    series = metric_series(index)
    private = index.task.privacy is not None
    note = (
        "<p>Central DP: the domains' own metrics are not shown (they are not noised).</p>" if private else ""
    )
    if not series:
        return note + "<p>No metrics were recorded.</p>"
    columns = min(3, len(series))
    rows = (len(series) + columns - 1) // columns
    figure, axes = _pyplot().subplots(rows, columns, figsize=(4.5 * columns, 3 * rows), squeeze=False)
    for axis, (name, points) in zip(axes.flat, sorted(series.items()), strict=False):
        xs = sorted(points)
        axis.plot(xs, [points[x] for x in xs], marker="o")
        axis.set_title(name)
        axis.set_xlabel("version")
        axis.grid(alpha=0.3)
    for axis in list(axes.flat)[len(series) :]:
        axis.set_visible(False)
    return note + _png(figure)


def privacy_section(index: TaskLog) -> str:
    privacy = index.task.privacy
    if privacy is None:
        return "<p>This task does not use central differential privacy.</p>"
    spent = [(n, v.privacy) for n in index.versions if (v := index.version(n)) is not None and v.privacy]
    intro = (
        f"<p>Central DP: clip norm {_e(privacy.clip_norm)}, noise multiplier {_e(privacy.noise_multiplier)}, "
        f"target &delta; {_e(privacy.target_delta)}, "
        f"budget &epsilon; {_e(privacy.max_epsilon or 'unbounded')}.</p>"
    )
    if not spent:
        return intro + "<p>No version has spent budget yet.</p>"
    figure, axis = _pyplot().subplots(figsize=(5, 3))
    axis.plot([n for n, _ in spent], [p.epsilon for _, p in spent], marker="o")
    if privacy.max_epsilon is not None:
        axis.axhline(privacy.max_epsilon, color="#b00020", linestyle="--", label="budget")
        axis.legend()
    axis.set_xlabel("version")
    axis.set_ylabel("epsilon spent")
    rows = [[str(n), f"{p.epsilon:.4g}", f"{p.delta:.2g}"] for n, p in spent]
    return intro + _png(figure) + _table(["version", "epsilon", "delta"], rows)


def replay_section(result: ReplayResult | None) -> str:
    if result is None:
        return "<p>No replay was run for this report.</p>"
    verdict = (
        '<span class="ok">every version reproduces</span>' if result.ok else '<span class="bad">FAILED</span>'
    )
    rows = [
        [
            str(v.version),
            str(v.round),
            _e(", ".join(v.contributing_domains)),
            _e(v.strategy),
            f"<code>{_e(v.published_sha256[:16])}</code>",
            '<span class="ok">yes</span>'
            if v.reproduced and v.self_hash_ok
            else '<span class="bad">no</span>',
        ]
        for v in result.versions
    ]
    findings = "".join(
        f"<li><b>{_e(f.severity)}</b> {_e(f.kind)}: {_e(f.message)}</li>" for f in result.findings
    )
    return (
        f"<p>Replay: {verdict} ({len(result.versions)} versions, {result.events_read} events, "
        f"{result.seconds:.2f} s).</p>"
        + _table(["version", "round", "domains", "strategy", "sha256", "reproduced"], rows)
        + (f"<ul>{findings}</ul>" if findings else "")
    )


def lineage_section(tree: Lineage, *, private: bool = False) -> str:
    """The chain of versions and their updates; example counts only without DP (they are not noised)."""
    parts = []
    for node in tree.chain:
        updates = "".join(
            f"<li>{_e(u.domain)}: update <code>{_e(u.update_id)}</code> (round {u.round}, "
            + ("" if private else f"{u.num_examples} examples, ")
            + f"offset {_e(u.offset)}) trained on "
            + (", ".join(f"{_e(p.id)} v{_e(p.version)}" for p in u.data_products) or "no declared product")
            + "</li>"
            for u in node.updates
        )
        excluded = "".join(
            f"<li>excluded {_e(x.domain)} <code>{_e(x.update_id)}</code>: {_e(x.policy)}: {_e(x.reason)}</li>"
            for x in node.excluded
        )
        parent = "task seed" if node.parent_version is None else f"parent v{node.parent_version}"
        parts.append(
            f"<li><b>v{node.version}</b> (round {node.round}, {parent}, {_e(node.strategy)}, "
            f"<code>{_e(node.sha256[:16])}</code>)<ul>{updates}{excluded}</ul></li>"
        )
    return f"<ul>{''.join(parts)}</ul>"


def rejections_section(index: TaskLog) -> str:
    rejected = index.rejections()
    if not rejected:
        return "<p>No update was rejected.</p>"
    rows = [
        [str(d.round), _e(d.domain), f"<code>{_e(d.update_id)}</code>", _e(d.policy), _e(d.reason)]
        for d in rejected
    ]
    return _table(["round", "domain", "update", "policy", "reason"], rows)


def render_report(index: TaskLog, result: ReplayResult | None = None) -> str:
    """The report as one HTML string."""
    if not index.versions:
        raise ReplayError(f"task {index.task_id!r} has no published version to report on")
    task = index.task
    sections = [
        ("Replay", replay_section(result)),
        ("Lineage of the latest version", lineage_section(lineage(index), private=task.privacy is not None)),
        ("Metrics per version", metrics_plot(index)),
        ("Rejected updates", rejections_section(index)),
        ("Differential privacy", privacy_section(index)),
    ]
    body = "".join(f"<h2>{_e(title)}</h2>{content}" for title, content in sections)
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>meshfl audit: {_e(task.id)}</title>"
        f"<style>{_STYLE}</style></head><body><h1>Audit report: {_e(task.id)}</h1>"
        f"<p>{_e(task.description)}<br>strategy {_e(task.strategy.name)}, mode {_e(task.mode.value)}, "
        f"{task.rounds} rounds planned, {len(index.versions)} versions published, "
        f"{index.events_read} events read.</p>{body}</body></html>"
    )


def write_report(index: TaskLog, out_dir: Path, result: ReplayResult | None = None) -> Path:
    """Write ``index.html`` into ``out_dir``; return its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "index.html"
    try:
        path.write_text(render_report(index, result), encoding="utf-8")
    except OSError as exc:
        raise ReplayError(f"cannot write the report to {path}: {exc}") from exc
    return path
