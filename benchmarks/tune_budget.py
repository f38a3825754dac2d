"""Grid search against TPE with ASHA pruning, for the same question: which weight decay for CE on digits-LT
(the embedded benchmark, small_cnn, CPU)? Both are `ltbench tune` studies, run here one after the other, each
in a results folder of its own (so that neither reuses the other's runs):

- grid: `--sampler grid` over train.weight_decay=log:1e-5..1e-1, every point trained to the end;
- TPE + ASHA: `--sampler tpe --pruner asha` over the same range, with up to twice as many trials as the grid
  has points (what counts is the compute until it first reaches the grid's best, not its whole budget).

It prints the compute each needed (epochs trained, and their device seconds) until a trial first reached the
grid's best validation score, the test top-1 that trial's run reports, and the grid's whole cost; the aim is
TPE + ASHA at a third or less of the grid's compute. The validation score decides everything; test top-1 is
only reported.

--quick: 8 epochs, a grid of 6 points, one seed (about a minute or two on 2 cores; CI runs it). Without it:
40 epochs (the recipe's), a grid of 12 points, seeds 0, 1, 2, and the record in benchmarks/results/.

Usage: python benchmarks/tune_budget.py [--quick] [--epochs N] [--points N] [--tpe-trials N] [--seeds 0,1,2]
       [--out FILE]
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ltbench.results.store import Store  # noqa: E402
from ltbench.tune.study import journal_file, load_summary  # noqa: E402

SEARCH = "train.weight_decay=log:1e-5..1e-1"


def study(results: Path, name: str, seed: int, epochs: int, trials: int, sampler: str, pruner: str) -> None:
    cmd = [sys.executable, "-m", "ltbench.cli.app", "tune", "-m", "ce", "-d", "digits_lt", "--epochs", str(epochs),
           "--search", SEARCH, "--trials", str(trials), "--sampler", sampler, "--pruner", pruner, "--seed", str(seed),
           "--study", name, "--device", "cpu", "--results", str(results)]
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def trace(results: Path, name: str) -> list[dict[str, Any]]:
    """Each trial in the order it ran: its value (None when pruned), the epochs and device seconds its run
    trained, and its run's test top-1 (finished runs)."""
    store, out = Store(results), []
    for t in sorted(load_summary(journal_file(results, name)).trials, key=lambda t: t.number):
        rd = store.find(t.run_id)
        rows = rd.metrics()
        out.append({"trial": t.number, "state": t.state, "values": " ".join(t.sets), "val": t.value,
                    "epochs": len(rows), "seconds": sum(r.get("time_s") or 0 for r in rows),
                    "test_top1": rd.result()["test"]["top1"] if rd.is_done() else None})
    return out


def to_reach(trials: list[dict[str, Any]], target: float) -> dict[str, Any]:
    """Epochs and seconds spent until the first trial at or above ``target`` (validation), and that trial."""
    epochs = seconds = 0.0
    for t in trials:
        epochs, seconds = epochs + t["epochs"], seconds + t["seconds"]
        if t["val"] is not None and t["val"] >= target:
            return {"epochs": int(epochs), "seconds": round(seconds, 1), "trial": t["trial"], "values": t["values"],
                    "val": t["val"], "test_top1": t["test_top1"]}
    return {"epochs": None, "seconds": None, "trial": None, "best_val": max((t["val"] for t in trials
                                                                             if t["val"] is not None), default=None)}


def compare(tmp: Path, seed: int, epochs: int, points: int, tpe_trials: int) -> dict[str, Any]:
    grid, tpe = tmp / f"grid-{seed}", tmp / f"tpe-{seed}"
    study(grid, "grid", seed, epochs, points, "grid", "none")
    study(tpe, "tpe-asha", seed, epochs, tpe_trials, "tpe", "asha")
    g, t = trace(grid, "grid"), trace(tpe, "tpe-asha")
    best = max(x["val"] for x in g if x["val"] is not None)
    out = {"seed": seed, "grid_best_val": best, "grid_total_epochs": sum(x["epochs"] for x in g),
           "grid_total_seconds": round(sum(x["seconds"] for x in g), 1), "grid": to_reach(g, best),
           "tpe_asha": to_reach(t, best), "tpe_asha_total_epochs": sum(x["epochs"] for x in t),
           "tpe_asha_pruned": sum(x["state"] == "pruned" for x in t), "trials": {"grid": g, "tpe_asha": t}}
    reached = out["tpe_asha"]["epochs"]
    out["ratio_to_grid_total"] = round(reached / out["grid_total_epochs"], 3) if reached else None
    out["ratio_to_grid_reach"] = round(reached / out["grid"]["epochs"], 3) if reached else None
    return out


def report(r: dict[str, Any]) -> str:
    g, t = r["grid"], r["tpe_asha"]
    lines = [f"seed {r['seed']}: the grid's best validation {r['grid_best_val']:.2f} ({g['values']}, test top-1 "
             f"{g['test_top1']:.2f})",
             f"  grid:       reached it after {g['epochs']} epochs ({g['seconds']} s, trial {g['trial']}); the whole "
             f"grid {r['grid_total_epochs']} epochs ({r['grid_total_seconds']} s)"]
    if t["epochs"] is None:
        lines.append(f"  TPE + ASHA: did not reach it in {len(r['trials']['tpe_asha'])} trials (best val "
                     f"{t['best_val']}); {r['tpe_asha_total_epochs']} epochs")
    else:
        lines.append(f"  TPE + ASHA: reached it after {t['epochs']} epochs ({t['seconds']} s, trial {t['trial']}: "
                     f"{t['values']}, val {t['val']:.2f}, test top-1 {t['test_top1']:.2f}); "
                     f"{r['tpe_asha_pruned']} of {len(r['trials']['tpe_asha'])} trials pruned")
        lines.append(f"  TPE + ASHA / grid: {r['ratio_to_grid_total']:.2f} of the whole grid's epochs, "
                     f"{r['ratio_to_grid_reach']:.2f} of the epochs the grid needed to reach it")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="8 epochs, 6 grid points, seed 0 (CI runs it)")
    ap.add_argument("--epochs", type=int, default=None, help="epochs of every run (default 40; --quick 8)")
    ap.add_argument("--points", type=int, default=None, help="grid points = TPE trials (default 12; --quick 6)")
    ap.add_argument("--seeds", default=None, help="run seeds, comma-separated (default 0,1,2; --quick 0)")
    ap.add_argument("--tpe-trials", type=int, default=None, help="TPE + ASHA's trials (default: twice --points)")
    ap.add_argument("--out", type=Path, default=None,
                    help="the JSON record (default benchmarks/results/tune_budget.json; --quick: none unless given)")
    args = ap.parse_args()
    epochs = args.epochs or (8 if args.quick else 40)
    points = args.points or (6 if args.quick else 12)
    seeds = [int(s) for s in (args.seeds or ("0" if args.quick else "0,1,2")).split(",")]
    out = args.out or (None if args.quick else ROOT / "benchmarks" / "results" / "tune_budget.json")
    with tempfile.TemporaryDirectory() as tmp:
        results = [compare(Path(tmp), s, epochs, points, args.tpe_trials or 2 * points) for s in seeds]
    for r in results:
        print(report(r))
    ratios = [r["ratio_to_grid_total"] for r in results if r["ratio_to_grid_total"] is not None]
    print(f"TPE + ASHA reached the grid's best validation in {len(ratios)} of {len(results)} seeds"
          + (f", at {sum(ratios) / len(ratios):.2f} of the grid's epochs on average (aim: 0.33 or less)" if ratios
             else ""))
    if out is not None:
        record = {"date": datetime.date.today().isoformat(), "benchmark": "digits_lt", "method": "ce",
                  "search": SEARCH, "epochs": epochs, "points": points, "tpe_trials": args.tpe_trials or 2 * points,
                  "results": results}
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(record, indent=2) + "\n")
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
