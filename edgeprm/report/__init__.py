"""Reports people can look at: `build_report(SCORED, OUT.html)` draws what a PRM thinks of a scored file.

One self-contained HTML file (figures embedded, opens offline): the score distribution per source, step-reward
curves of sample trajectories, the position of the first doubted step, and with `is_correct` labels Best-of-N
accuracy against N and a calibration curve. `png_dir` also writes each figure as a PNG.

- `edgeprm.report.data`: one streaming pass over the rows -> the numbers (`collect`, `ReportData`);
- `edgeprm.report.figures`: the matplotlib figures;
- `edgeprm.report.html`: the page.
"""

from __future__ import annotations

import os
from pathlib import Path

from edgeprm.report.data import ReportData, ReportOptions, collect


def build_report(path: str | Path, output: str | Path, options: ReportOptions | None = None,
                 png_dir: str | Path | None = None) -> ReportData:
    """Read a scored JSONL or Parquet file and write the HTML report to `output` (atomically; PNGs to `png_dir`
    when given). Returns the numbers the report shows."""
    from edgeprm.report.figures import draw_all
    from edgeprm.report.html import render
    from edgeprm.select.io import iter_rows

    opts = options or ReportOptions()
    data = collect(iter_rows(path), opts, str(path))
    if data.rows == 0:
        raise ValueError(f"{path} has no rows to report on")
    figures = draw_all(data)
    output = Path(output)
    tmp = output.with_name(output.name + ".part")
    tmp.write_text(render(data, figures, Path(path).name), encoding="utf-8")
    os.replace(tmp, output)
    if png_dir is not None:
        png_dir = Path(png_dir)
        png_dir.mkdir(parents=True, exist_ok=True)
        for f in figures:
            (png_dir / f"{f.name}.png").write_bytes(f.png)
    return data


__all__ = ["ReportData", "ReportOptions", "build_report", "collect"]
