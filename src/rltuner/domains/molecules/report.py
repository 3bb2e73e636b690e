"""Figures and the HTML report of a molecule run (``rltuner run --domain molecules``).

Figures: the reward curves (Figure 2's analogue: mean log p(a|s) under the prior and mean r_T per molecule
against environment steps), property histograms (QED, SA, logP, weight: the MOSES data, the prior, each
model) and grids of molecule drawings (RDKit, SVG) for random and top-scoring samples of every model.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rltuner.evaluation.figures import _colour, _pyplot, _save, figure2, model_label
from rltuner.evaluation.report import _CSS, _img, _missing, _table
from rltuner.fileio import write_text_atomic

PathLike = str | os.PathLike[str]
PROPERTIES = (
    ("qed", "QED"),
    ("sa", "SA (1 easy .. 10 hard)"),
    ("logp", "logP (Crippen)"),
    ("weight", "mol. weight"),
)


def reward_curves(runs: Mapping[str, PathLike], path: PathLike) -> Path:
    """Figure 2 for molecules: (a) mean log p(a|s) under the prior, (b) mean r_T per molecule, against steps."""
    return figure2(
        runs, path, reward_key="mean_return",
        ylabels=("mean log p(a|s) under the prior", "mean r_T per molecule"),
        titles=("(a) data probability", "(b) chemistry reward"), xlabel="environment steps (tokens played)",
        uniform_log_p=None,
    )  # fmt: skip


def property_histograms(props: Mapping[str, Mapping[str, np.ndarray]], path: PathLike) -> Path:
    """One panel per property, one outline histogram per source (data, prior, models), densities."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(PROPERTIES), figsize=(4 * len(PROPERTIES), 3.4))
    for ax, (key, label) in zip(axes, PROPERTIES, strict=True):
        values = [np.asarray(p.get(key, []), dtype=float) for p in props.values()]
        values = [v[np.isfinite(v)] for v in values]  # NaN where RDKit could not compute a property
        finite = np.concatenate([v[np.isfinite(v)] for v in values if v.size] or [np.zeros(1)])
        lo, hi = np.percentile(finite, [0.5, 99.5]) if finite.size > 1 else (0.0, 1.0)
        bins = np.linspace(lo, hi if hi > lo else lo + 1, 40)
        for i, (name, v) in enumerate(zip(props, values, strict=True)):
            if ((v >= bins[0]) & (v <= bins[-1])).any():  # a density needs something inside the range
                ax.hist(v, bins=bins, density=True, histtype="step", lw=1.4, color=_colour(name, i),
                        label=model_label(name))  # fmt: skip
        ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def molecule_grid_svg(smiles: Sequence[str], legends: Sequence[str] | None = None, per_row: int = 6) -> str:
    """RDKit drawings of valid SMILES as one SVG string (invalid ones are left out)."""
    from rdkit.Chem import Draw

    from rltuner.domains.molecules.reward import parse_smiles

    mols, names = [], []
    for i, s in enumerate(smiles):
        mol = parse_smiles(s) if s else None
        if mol is not None:
            mols.append(mol)
            names.append(legends[i] if legends is not None else "")
    if not mols:
        return ""
    svg = Draw.MolsToGridImage(mols, molsPerRow=per_row, subImgSize=(200, 170), legends=names, useSVG=True)
    return str(svg)


def write_molecule_report(
    path: PathLike,
    *,
    title: str,
    summary: str,
    table_header: list[str],
    table_rows: list[tuple[str, list[str]]],
    figures: Mapping[str, Path | None],
    grids: Mapping[str, tuple[str, str]],
    command: str,
    config: Mapping[str, Any],
    versions: Mapping[str, str],
    timings: Mapping[str, float],
) -> Path:
    """The self-contained report: summary, table, reward curves, histograms, molecule grids, provenance."""
    grid_html = "".join(
        f"<h3>{html.escape(model_label(name))}</h3><p>random samples</p>{random_svg or _missing('Drawings')}"
        f"<p>top r_T</p>{top_svg or _missing('Drawings')}"
        for name, (random_svg, top_svg) in grids.items()
    )
    sections = [
        ("summary", "Summary", f"<p>{html.escape(summary)}</p>"),
        ("table", "Molecule metrics beside MOSES's CharRNN", _table(table_header, table_rows, 1)),
        ("curves", "Reward curves (Figure 2's analogue)", _img(figures.get("curves"), "Reward curves")),
        ("properties", "Property histograms", _img(figures.get("properties"), "Property histograms")),
        ("molecules", "Molecules", grid_html or _missing("Molecule drawings")),
        ("command", "Command and configuration", f"<pre>{html.escape(command)}</pre><pre>"
         f"{html.escape(json.dumps(dict(config), indent=2, default=str))}</pre>"),
        ("versions", "Versions", _table(["package", "version"], [(k, [str(v)]) for k, v in versions.items()], 0)),
        ("timings", "Timings", _table(["stage", "seconds"], [(k, [f"{float(v):.1f}"]) for k, v in timings.items()], 0)),
    ]  # fmt: skip
    nav = "".join(f'<a href="#{k}">{html.escape(t)}</a>' for k, t, _ in sections)
    body = "".join(f'<section id="{k}"><h2>{html.escape(t)}</h2>{b}</section>' for k, t, b in sections)
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_CSS} svg {{ max-width: 100%; height: auto; }}</style>"
        f"</head><body><h1>{html.escape(title)}</h1><nav>{nav}</nav>{body}</body></html>\n"
    )
    return write_text_atomic(path, page)
