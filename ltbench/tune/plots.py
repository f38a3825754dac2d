"""`ltbench plot tune STUDY`: Optuna's matplotlib figures of a study, stacked into one PNG: the optimisation
history (each trial's validation score and the best so far), the score against each searched setting (a log
axis for a log range), and, when trials reported per-epoch validation, the learning curves that pruning
read."""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path
from typing import Any

from ..errors import LtbenchError

TARGET = "validation class-mean accuracy (%)"


def plot_study(results: Path, names: list[str] | None, out: Path | None) -> Path:
    """Draw the study that ``names`` names (one name, or its first characters) to ``out`` (default
    ltbench-tune-STUDY.png); the path written."""
    from .study import find_summary, quiet_optuna, storage

    if not names or len(names) != 1:
        raise LtbenchError("`ltbench plot tune STUDY`: name one study (`ltbench status` lists them).")
    summary = find_summary(results, names[0])
    if summary.best is None:
        raise LtbenchError(f"study {summary.name} has no finished trial yet; `ltbench status` shows its progress.")
    optuna = quiet_optuna()
    study = optuna.load_study(study_name=summary.name, storage=storage(summary.path))
    out = Path(out or f"ltbench-tune-{summary.name}.png")
    _write(_figures(study, summary.name), out)
    return out


def _figures(study: Any, name: str) -> list[bytes]:
    """PNG bytes of each of Optuna's figures that fits this study."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as ovm

    pngs = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna's matplotlib figures are marked experimental
        drawn = [ovm.plot_optimization_history(study, target_name=TARGET), ovm.plot_slice(study, target_name=TARGET)]
        if any(t.intermediate_values for t in study.get_trials(deepcopy=False)):
            curves = ovm.plot_intermediate_values(study)
            curves.set_xlabel("epoch of the trial's run (pruning reads these)")
            curves.set_ylabel(f"per-epoch {TARGET}")
            drawn.append(curves)
    for i, axes in enumerate(drawn):
        fig = (axes.flat[0] if hasattr(axes, "flat") else axes).figure
        if i == 0:
            fig.suptitle(f"study {name}")
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
        plt.close(fig)
        pngs.append(buf.getvalue())
    return pngs


def _write(pngs: list[bytes], out: Path) -> None:
    """The figures one below the other, in one PNG, written atomically."""
    from PIL import Image

    images = [Image.open(io.BytesIO(p)).convert("RGB") for p in pngs]
    sheet = Image.new("RGB", (max(i.width for i in images), sum(i.height for i in images)), "white")
    y = 0
    for image in images:
        sheet.paste(image, (0, y))
        y += image.height
    tmp = out.with_name(f".{out.name}.tmp.png")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        sheet.save(tmp)
        tmp.replace(out)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise LtbenchError(f"cannot write the plot to {out} ({exc.strerror or exc}); pass -o with a .png file in a "
                           "folder you can write to.") from None
