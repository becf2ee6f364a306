"""The report of a run: Markdown and CSV tables per policy x domain, and PNG plots.

``dataeng-gym report RUN_DIR`` reads ``RUN_DIR/results.jsonl`` (the source of truth) and writes
``report.md`` (what a person reads first), ``report.csv`` (the same numbers, for code) and
``plots/public_by_train.png`` and ``plots/skills_before_after.png``.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from dataeng_gym.errors import DataEngError
from dataeng_gym.io import write_csv, write_figure, write_text
from dataeng_gym.results import RESULTS_FILE, read_results

# Student t quantiles t(0.975, df) for df = 1..30; beyond 30 the normal 1.96 is close enough.
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip

CSV_COLUMNS = (
    "experiment",
    "policy",
    "domain",
    "n",
    "failures",
    "gain_rel_pct_mean",
    "gain_rel_pct_ci95",
    "gain_abs_points_mean",
    "gain_abs_points_ci95",
    "gap_points_mean",
    "gap_points_ci95",
    "base_private_pct_mean",
    "final_private_pct_mean",
    "teacher_samples_mean",
    "student_seconds_mean",
)
"""Columns of ``report.csv``; ``_ci95`` is the half-width of a 95% confidence interval."""


def mean_ci95(values: Sequence[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95% Student-t confidence interval (NaN below 2 values).

    >>> mean, half = mean_ci95([1.0, 2.0, 3.0])
    >>> mean, round(half, 3)
    (2.0, 2.484)
    """
    n = len(values)
    if n == 0:
        return math.nan, math.nan
    mean = sum(values) / n
    if n < 2:
        return mean, math.nan
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    t = _T975[n - 2] if n - 1 <= len(_T975) else 1.96
    return mean, round(t * sd / math.sqrt(n), 12)


def paired_ci95(a: Mapping[Any, float], b: Mapping[Any, float]) -> tuple[float, float, int]:
    """Mean and 95% half-width of ``a[k] - b[k]`` over the keys both have, and their number.

    Paired by key (an evaluation seed): both policies met the same start, so the seed's own
    luck cancels and the interval is narrower than that of the difference of two means.

    >>> mean, half, n = paired_ci95({1: 2.0, 2: 3.0, 3: 5.0}, {1: 1.0, 2: 1.0, 3: 2.0, 4: 9.0})
    >>> mean, round(half, 3), n
    (2.0, 2.484, 3)
    """
    keys = [k for k in a if k in b]
    mean, half = mean_ci95([a[k] - b[k] for k in keys])
    return mean, half, len(keys)


def pooled_paired_ci95(
    runs: Sequence[Mapping[Any, float]], b: Mapping[Any, float]
) -> tuple[float, float, int]:
    """:func:`paired_ci95` of the mean of several runs against ``b``, over the keys all share.

    Per key (an evaluation seed), the runs' values (say, policies from different training
    seeds) are averaged first; the interval is over the keys, so it says how the runs do
    together on these seeds, not how far apart the runs are.

    >>> runs = [{1: 2.0, 2: 4.0}, {1: 4.0, 2: 6.0, 3: 9.0}]  # seed 3: only in one run
    >>> mean, half, n = pooled_paired_ci95(runs, {1: 1.0, 2: 2.0, 3: 0.0})
    >>> mean, n
    (2.5, 2)
    """
    if not runs:
        return math.nan, math.nan, 0
    keys = set.intersection(*(set(r) for r in runs))
    return paired_ci95({k: sum(r[k] for r in runs) / len(runs) for k in keys}, b)


def gains_by_seed(records: Iterable[Mapping[str, Any]]) -> dict[tuple, dict[Any, float]]:
    """Private gain in points per evaluation seed, keyed by (domain, policy, student).

    The grouping of ``experiments/train_ppo.py``'s ``episodes.jsonl`` records; a key that
    was never recorded reads as an empty mapping.

    >>> g = gains_by_seed([{"domain": "code", "policy": "uniform", "student": "tiny",
    ...                     "seed": 7, "gain_abs": 0.125}])
    >>> g["code", "uniform", "tiny"], g["code", "random", "tiny"]
    ({7: 12.5}, {})
    """
    gains: dict[tuple, dict[Any, float]] = defaultdict(dict)
    for r in records:
        gains[r["domain"], r["policy"], r["student"]][r["seed"]] = 100 * r["gain_abs"]
    return gains


def summarize(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row of ``CSV_COLUMNS`` per (experiment, policy, domain), in first-seen order."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        groups[(r["experiment"], r["policy"], r["domain"])].append(r)
    rows = []
    for (experiment, policy, domain), group in groups.items():
        ok = [r["summary"] for r in group if r["status"] == "ok"]

        row: dict[str, Any] = {
            "experiment": experiment,
            "policy": policy,
            "domain": domain,
            "n": len(ok),
            "failures": len(group) - len(ok),
        }
        row["gain_rel_pct_mean"], row["gain_rel_pct_ci95"] = _stat(ok, "gain_rel")
        row["gain_abs_points_mean"], row["gain_abs_points_ci95"] = _stat(ok, "gain_abs", 100)
        row["gap_points_mean"], row["gap_points_ci95"] = _stat(ok, "public_private_gap", 100)
        row["base_private_pct_mean"] = _stat(ok, "base_private", 100)[0]
        row["final_private_pct_mean"] = _stat(ok, "final_private", 100)[0]
        row["teacher_samples_mean"] = _stat(ok, "teacher_samples")[0]
        row["student_seconds_mean"] = _stat(ok, "student_seconds")[0]
        rows.append(row)
    return rows


def _stat(summaries: Sequence[dict[str, Any]], key: str, scale: float = 1.0) -> tuple[float, float]:
    return mean_ci95([scale * float(s[key]) for s in summaries if s.get(key) is not None])


def write_report(run_dir: str | Path) -> dict[str, Path]:
    """Write ``report.md``, ``report.csv`` and the plots into ``run_dir``; return their paths.

    ``run_dir`` may also name the run's ``results.jsonl``: the report goes beside it.
    """
    run_dir = Path(run_dir)
    if run_dir.is_file():
        run_dir = run_dir.parent
    records = read_results(run_dir)
    if not records:
        raise DataEngError(
            f"no episode records in {run_dir / RESULTS_FILE}; run `dataeng-gym compare --out "
            f"{run_dir} ...` first, or point `report` at a run directory"
        )
    rows = summarize(records)
    paths = {
        "md": run_dir / "report.md",
        "csv": run_dir / "report.csv",
        "public_by_train": run_dir / "plots" / "public_by_train.png",
        "skills": run_dir / "plots" / "skills_before_after.png",
    }
    _write_csv(paths["csv"], rows)
    ok = [r for r in records if r["status"] == "ok"]
    plots = {
        "public_by_train": _plot_public_by_train(paths["public_by_train"], ok),
        "skills": _plot_skills(paths["skills"], ok),
    }
    paths = {k: v for k, v in paths.items() if plots.get(k, True)}
    _write_line_ended(paths["md"], markdown(run_dir, records, rows, plots))
    return paths


def markdown(
    run_dir: Path,
    records: Sequence[dict[str, Any]],
    rows: Sequence[dict[str, Any]],
    plots: dict[str, bool],
) -> str:
    """The text of ``report.md``."""
    ok = [r for r in records if r["status"] == "ok"]
    failed = [r for r in records if r["status"] != "ok"]
    experiments = sorted({r["experiment"] for r in records})
    envs = sorted({str(r["summary"].get("env", "unknown")) for r in ok})
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"# Report: {run_dir.name}",
        "",
        f"{len(records)} episodes ({len(ok)} finished, {len(failed)} failed) of experiment "
        f"{', '.join(experiments)}; env {', '.join(envs) or 'n/a'}; written {now} from "
        f"`{RESULTS_FILE}`.",
        "",
        "## Private gain per policy and domain",
        "",
        "*Private gain*: final minus base accuracy of the student on the hidden `private` split,"
        " in accuracy points; *relative*: the same as a percentage of the base accuracy (the"
        " paper's metric). `±` is the half-width of a 95% confidence interval over seeds"
        " (Student t; none with one seed). *Gap*: public minus private accuracy of the final"
        " student (positive: the feedback split flatters it). Teacher samples and student"
        " seconds are means per episode.",
        "",
        table(rows, multi_experiment=len(experiments) > 1),
        "",
    ]
    best = _best_per_domain(rows)
    if best:
        lines += ["**Best policy per domain** (highest mean private gain): " + best, ""]
    if plots.get("public_by_train"):
        lines += [
            "## Public score after each TRAIN",
            "",
            "Mean over seeds; TRAIN 0 is the base student. The env keeps the best TRAIN, so an"
            " episode's final public score is the maximum of its curve.",
            "",
            "![public score per TRAIN](plots/public_by_train.png)",
            "",
        ]
    if plots.get("skills"):
        lines += [
            "## Per-skill public accuracy, base and best TRAIN",
            "",
            "![per-skill accuracy before and after](plots/skills_before_after.png)",
            "",
        ]
    if failed:
        lines += [
            "## Failed episodes",
            "",
            "| policy | domain | seed | attempts | error |",
            "|---|---|---|---|---|",
        ]
        for r in failed:
            error = (r.get("error") or "").replace("|", "\\|").splitlines()
            lines.append(
                f"| {r['policy']} | {r['domain']} | {r['seed']} | {r['attempts']} | "
                f"{error[0] if error else ''} |"
            )
        lines += ["", "Tracebacks are in the records of `results.jsonl`.", ""]
    return "\n".join(lines)


def table(rows: Sequence[dict[str, Any]], multi_experiment: bool = False) -> str:
    """The policy x domain table in Markdown (also what ``compare`` prints at the end)."""
    head = ["policy", "domain", "n", "private gain (points)", "relative gain (%)"]
    head += ["base → final private (%)", "gap (points)", "teacher samples", "student s", "failed"]
    if multi_experiment:
        head.insert(0, "experiment")
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [
            r["policy"],
            r["domain"],
            str(r["n"]),
            _pm(r["gain_abs_points_mean"], r["gain_abs_points_ci95"], signed=True),
            _pm(r["gain_rel_pct_mean"], r["gain_rel_pct_ci95"], signed=True),
            f"{_num(r['base_private_pct_mean'])} → {_num(r['final_private_pct_mean'])}",
            _pm(r["gap_points_mean"], r["gap_points_ci95"], signed=True),
            _num(r["teacher_samples_mean"], 0),
            _num(r["student_seconds_mean"]),
            str(r["failures"]),
        ]
        if multi_experiment:
            cells.insert(0, r["experiment"])
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def _pm(mean: float, ci: float, signed: bool = False) -> str:
    if math.isnan(mean):
        return "n/a"
    text = f"{mean:+.1f}" if signed else f"{mean:.1f}"
    return text if math.isnan(ci) else f"{text} ± {ci:.1f}"


def _num(value: float, digits: int = 1) -> str:
    return "n/a" if math.isnan(value) else f"{value:,.{digits}f}"


def _best_per_domain(rows: Sequence[dict[str, Any]]) -> str:
    best: dict[str, dict[str, Any]] = {}
    for r in rows:
        if r["n"] and not math.isnan(r["gain_abs_points_mean"]):
            if r["domain"] not in best or (
                r["gain_abs_points_mean"] > best[r["domain"]]["gain_abs_points_mean"]
            ):
                best[r["domain"]] = r
    return "; ".join(
        f"{d}: {r['policy']} ({r['gain_abs_points_mean']:+.1f} points)" for d, r in best.items()
    )


def _write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    cells = ({k: "" if _isnan(r[k]) else _round(r[k]) for k in CSV_COLUMNS} for r in rows)
    write_csv(path, cells, CSV_COLUMNS)


def _isnan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _round(value: Any) -> Any:
    return round(value, 4) if isinstance(value, float) else value


def _write_line_ended(path: Path, text: str) -> None:
    write_text(path, text if text.endswith("\n") else text + "\n")


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _plot_public_by_train(path: Path, ok: Sequence[dict[str, Any]]) -> bool:
    """Mean public accuracy after TRAIN k (k = 0 is the base), per policy, one panel per domain."""
    curves: dict[str, dict[str, list[list[float]]]] = defaultdict(lambda: defaultdict(list))
    for r in ok:
        s = r["summary"]
        if "train_publics" in s:
            curves[r["domain"]][r["policy"]].append([s["base_public"], *s["train_publics"]])
    if not curves:
        return False
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 3.8), squeeze=False)
    for ax, (domain, by_policy) in zip(axes[0], curves.items()):
        for policy, runs in by_policy.items():
            length = max(len(c) for c in runs)
            means = [
                100 * sum(c[k] for c in runs if len(c) > k) / sum(len(c) > k for c in runs)
                for k in range(length)
            ]
            ax.plot(range(length), means, marker="o", label=f"{policy} (n={len(runs)})")
        ax.set_title(domain)
        ax.set_xlabel("TRAIN (0 = base student)")
        ax.set_xticks(range(max(len(c) for runs in by_policy.values() for c in runs)))
        ax.set_ylabel("public accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    write_figure(path, fig, dpi=100)
    plt.close(fig)
    return True


def _plot_skills(path: Path, ok: Sequence[dict[str, Any]]) -> bool:
    """Per-skill public accuracy: the base, then the best TRAIN of each policy (means)."""
    base: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    final: dict[str, dict[str, dict[str, list[float]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list))
    )
    for r in ok:
        s = r["summary"]
        if "final_skill_public" not in s:
            continue
        for skill, acc in s["base_skill_public"].items():
            base[r["domain"]][skill].append(acc)
        for skill, acc in s["final_skill_public"].items():
            final[r["domain"]][r["policy"]][skill].append(acc)
    if not base:
        return False
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(base), figsize=(5 * len(base), 3.8), squeeze=False)
    for ax, (domain, skills) in zip(axes[0], base.items()):
        names = list(skills)
        series = {"base": skills, **final[domain]}
        width = 0.8 / len(series)
        for i, (label, accs) in enumerate(series.items()):
            heights = [100 * sum(accs[n]) / len(accs[n]) if accs[n] else 0.0 for n in names]
            ax.bar([j + i * width for j in range(len(names))], heights, width, label=label)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(names))], names)
        ax.set_title(domain)
        ax.set_ylabel("public accuracy (%)")
        ax.set_ylim(0, 100)
        ax.legend(fontsize=8)
    fig.tight_layout()
    write_figure(path, fig, dpi=100)
    plt.close(fig)
    return True
