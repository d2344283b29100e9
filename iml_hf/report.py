"""Turn a sweep (or any folder of runs) into the IML numbers and figures.

    python -m iml_hf.report runs/sweep [--confidence 0.95] [--dpi 200] [--report_dir DIR]

Reads every run's ``results.json`` and ``metrics.jsonl`` (grouped by the sweep's ``--set`` values
when ``sweep.json`` is there) and writes into the folder: ``summary.json`` and ``summary.md`` (per
stage and evaluation set the mean EM with a t-interval over seeds; every contrast the task declares
(``EM(a) - EM(b)``, e.g. the toy's ``iml_gap`` or entity QA's ``stage2_d1_vs_d2``) at every stage
end with its interval and a one-sided paired t-test; each measurement's stage-end values through
its ``iml_hf.measure.registry`` report reader), figures (PNG at ``--dpi``, PDF and SVG: EM in one panel per
stage with the headline contrast beneath, colours fixed per role across tasks, captions giving n and
the interval), every table also as CSV and LaTeX (``tables/``), the report's and the runs'
provenance, and ``report.md`` that shows them all. ``--report_dir`` writes all of it elsewhere
(``docs/results/NAME``), leaving the runs' folder as it was. JSON is strict: NaN is written as null.

Bad input never aborts the report nor slips into it: a run whose ``results.json`` cannot be read or
lacks what the report needs is skipped and listed (file and reason) in the output, summary.json
(``bad_runs``) and the Markdown files; a ``metrics.jsonl`` whose last line is cut off (what a
killed writer leaves) loses that line, with a note naming the file. Two runs of one group with the
same seed (a copied run folder) are refused (exit 2, naming both): a copy must never count twice.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from iml_hf.reporting.gate import NOT_INTERPRETABLE
from iml_hf.reporting.group_figures import figures
from iml_hf.reporting.group_summary import gate_verdict, summarize_group
from iml_hf.reporting.markdown import figure_markdown, group_markdown, problem_markdown, report_head
from iml_hf.reporting.plots import DEFAULT_DPI
from iml_hf.reporting.report_provenance import provenance_markdown, report_provenance, runs_provenance
from iml_hf.reporting.runs import group_runs, load_runs
from iml_hf.reporting.tables import with_table_files
from iml_hf.utils.io import write_json_atomic


def build_report(
    root: Path,
    confidence: float = 0.95,
    dpi: int = DEFAULT_DPI,
    report_dir: Path | None = None,
    argv: list[str] | None = None,
) -> dict[str, Any]:
    """Write summary.json, summary.md, the figures (PNG, PDF, SVG), the tables (CSV, LaTeX) and
    report.md into ``report_dir`` (default: ``root``, the folder of runs); return the summary."""
    out = Path(report_dir) if report_dir is not None else Path(root)
    out.mkdir(parents=True, exist_ok=True)
    loaded = load_runs(root)
    if not loaded.runs:
        bad = "".join(f"\n  skipped {b['path']}: {b['reason']}" for b in loaded.bad)
        raise ValueError(f"no finished runs (results.json) under {root}" + bad)
    groups = group_runs(loaded.runs)
    own, recorded = report_provenance(argv), runs_provenance(loaded.runs)
    summary: dict[str, Any] = {
        "confidence": confidence,
        "groups": {},
        "missing_runs": loaded.missing,
        "bad_runs": loaded.bad,
        "notes": loaded.notes,
        "provenance": own,
        "runs_provenance": recorded,
    }
    md = ["# Summary", ""] + problem_markdown(loaded)
    report = report_head(root, loaded, len(groups), provenance_markdown(own, recorded))
    several = len(groups) > 1
    taken: set[str] = set()  # the tables' file names so far
    for index, (label, members) in enumerate(groups.items()):
        group = summarize_group(members, confidence)
        summary["groups"][label] = group
        tables = with_table_files(
            group_markdown(label, group, confidence), out / "tables", f"g{index}_" if several else "", taken
        )
        drawn = figures(members, out, f"_g{index}" if several else "", label, confidence, group.get("nested"), dpi)
        md += tables
        report += tables + figure_markdown(index + 1, drawn)
    write_json_atomic(out / "summary.json", summary)
    for name, lines in (("summary.md", md), ("report.md", report)):
        (out / name).write_text("\n".join(lines) + "\n")
    return summary


def _print_headlines(summary: dict[str, Any]) -> None:
    """Print each group's contrasts, a line each: the branch stage's read-out (branched groups) and the
    last stage end, or the gate's verdict where it refuses the contrast."""
    for label, group in summary["groups"].items():
        for name, entry in (group.get("nested") or {}).items():
            if "readout" in entry and gate_verdict(group, name, list(group["em"])[-1]) == NOT_INTERPRETABLE:
                print(f"{label}: {name} read-out {entry['readout']['mean']:+.3f}: {NOT_INTERPRETABLE}")
            elif "readout" in entry:
                print(
                    f"{label}: {name} read-out {entry['readout_text']}; start {entry.get('start_text', '-')}; "
                    f"read-out - start {entry.get('corrected_text', '-')}"
                )
        for name, per_stage in group["contrasts"].items():
            stage, g = list(per_stage.items())[-1]
            if gate_verdict(group, name, stage) == NOT_INTERPRETABLE:
                print(f"{label}: {name} at the end of {stage} {g['mean']:+.4f}: {NOT_INTERPRETABLE}")
                continue
            print(
                f"{label}: {name} at the end of {stage} {g['mean']:+.4f} [{g['ci_low']:+.4f}, {g['ci_high']:+.4f}], "
                f"one-sided paired t-test p = {g['p_value']:.4g}, n = {g['n']}"
            )


def main(argv: list[str] | None = None) -> int:
    """``python -m iml_hf.report``: check the arguments, write the report, print its headlines; 2 on an error."""
    parser = argparse.ArgumentParser(prog="python -m iml_hf.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("output_dir", help="a sweep folder (with sweep.json) or any folder of runs")
    parser.add_argument(
        "--confidence",
        type=float,
        default=0.95,
        help="level of every interval and band (default 0.95: 95%% t-intervals over seeds)",
    )
    parser.add_argument(
        "--dpi",
        type=int,
        default=DEFAULT_DPI,
        help=f"resolution of the PNG figures (default {DEFAULT_DPI}); PDF and SVG are vector files",
    )
    parser.add_argument(
        "--report_dir", default=None, help="write the report there instead of into OUTPUT_DIR (e.g. docs/results/NAME)"
    )
    args = parser.parse_args(argv)
    if args.dpi < 10:
        print(f"error: --dpi {args.dpi} is too small; use e.g. 200 (the default) or 300 for print", file=sys.stderr)
        return 2
    if not 0 < args.confidence < 1:
        print(f"error: --confidence {args.confidence} must lie strictly between 0 and 1 (e.g. 0.95)", file=sys.stderr)
        return 2
    root = Path(args.output_dir)
    if not root.is_dir():
        print(f"error: {root} is not a folder of runs", file=sys.stderr)
        return 2
    try:
        summary = build_report(
            root, args.confidence, args.dpi, args.report_dir, [__file__, *(sys.argv[1:] if argv is None else argv)]
        )
    except ValueError as error:  # DuplicateRuns among them
        print(f"error: {error}", file=sys.stderr)
        return 2
    for bad in summary["bad_runs"]:
        print(f"warning: skipped {bad['path']}: {bad['reason']}", file=sys.stderr)
    for note in summary["notes"]:
        print(f"note: {note}", file=sys.stderr)
    _print_headlines(summary)
    out = Path(args.report_dir or root)
    print(f"wrote {out / 'summary.md'}, {out / 'report.md'}, figures (PNG, PDF, SVG) and tables/ (CSV, LaTeX)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
