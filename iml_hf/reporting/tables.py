"""Every Markdown table of a report also as CSV and LaTeX (booktabs), for spreadsheets and papers.

The tables are read back from the Markdown the report writes (one source: the CSV and LaTeX cells
are the Markdown's cells, so the three never disagree) and written with pandas (``to_csv``;
``to_latex``, whose booktabs rules need jinja2, installed with torch).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from iml_hf.utils.io import write_atomic

#: File names of the report's tables, by the first words of their title (else a slug of it).
TABLE_NAMES = (
    ("Interpretability gate", "gate"),
    ("Base task", "base_task"),
    ("Contrasts of the branch stage", "branch_contrasts"),
    ("Contrasts", "contrasts"),
    ("Exact match", "exact_match"),
    ("Gradient alignment", "grad_align"),
    ("Alias-referent embedding", "embedding"),
    ("Linear-probe accuracy", "probes"),
)
_LATEX_SPECIALS = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


@dataclass
class MarkdownTable:
    """One pipe table of a Markdown text: its title (the bold line above it), header and rows, and
    the index of its last line in the text."""

    title: str
    header: list[str]
    rows: list[list[str]]
    end: int


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def markdown_tables(lines: list[str]) -> list[MarkdownTable]:
    """The pipe tables of ``lines`` (a header row, a ``|---|`` rule, then rows), each with the
    bold title line above it (markup stripped)."""
    tables = []
    index = 0
    while index < len(lines) - 1:
        if lines[index].startswith("|") and re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", lines[index + 1].strip()):
            header = _cells(lines[index])
            end = index + 2
            rows = []
            while end < len(lines) and lines[end].startswith("|"):
                rows.append(_cells(lines[end]))
                end += 1
            above = next((lines[i] for i in range(index - 1, -1, -1) if lines[i].strip()), "")
            title = re.sub(r"\*\*", "", above).strip()
            tables.append(MarkdownTable(title, header, rows, end - 1))
            index = end
        else:
            index += 1
    return tables


def table_name(title: str, taken: set[str]) -> str:
    """A file name for a table from its title, unique among ``taken`` (which it joins)."""
    base = next((name for prefix, name in TABLE_NAMES if title.startswith(prefix)), None)
    if base is None:
        base = "_".join(re.findall(r"[a-z0-9]+", title.lower())[:4]) or "table"
    name, count = base, 2
    while name in taken:
        name, count = f"{base}_{count}", count + 1
    taken.add(name)
    return name


def latex_escape(text: str) -> str:
    """``text`` with LaTeX's special characters escaped (for captions)."""
    return "".join(_LATEX_SPECIALS.get(c, c) for c in text)


def write_table(table: MarkdownTable, stem: Path) -> tuple[Path, Path]:
    """``<stem>.csv`` and ``<stem>.tex`` (a booktabs table with the title as caption) of one table."""
    frame = pd.DataFrame(table.rows, columns=table.header)
    csv, tex = stem.with_suffix(".csv"), stem.with_suffix(".tex")
    write_atomic(csv, lambda tmp: frame.to_csv(tmp, index=False))
    latex = frame.to_latex(
        index=False,
        escape=True,
        caption=latex_escape(table.title),
        label=f"tab:{stem.name}",
        column_format="l" * len(table.header),
    )
    write_atomic(tex, lambda tmp: tmp.write_text(latex))
    return csv, tex


def with_table_files(lines: list[str], folder: Path, prefix: str = "", taken: set[str] | None = None) -> list[str]:
    """Write every table of ``lines`` as CSV and LaTeX into ``folder`` (``<prefix><name>.csv/.tex``)
    and return ``lines`` with a line linking both files after each table (links relative to the
    folder's parent, where the Markdown file lies)."""
    taken = set() if taken is None else taken
    tables = markdown_tables(lines)
    if not tables:
        return list(lines)
    folder.mkdir(parents=True, exist_ok=True)
    out = list(lines)
    names = [prefix + table_name(table.title, taken) for table in tables]
    for table, name in reversed(list(zip(tables, names))):  # insert from the end: earlier indices stay valid
        csv, tex = write_table(table, folder / name)
        link = f"{folder.name}/{csv.name}"
        out.insert(table.end + 1, f"\n(also as [CSV]({link}) and [LaTeX]({folder.name}/{tex.name}))")
    return out
