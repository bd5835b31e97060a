"""``python -m models.ablation``: cross-validated accuracy *without* each training change.

Every change to training must be justified by the data: this runs the same k-fold CV as
``skysift model train --cv K`` (same folds, same seeds) with one change switched off, and writes
the results to ``ablations.json`` in the model directory. ``skysift model train`` puts them in the
card beside its own CV figures (the "with" side). Minutes of CPU per change: run by hand, never
in CI.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from models.dataset import load_dataset, stratified_split

ABLATIONS_NAME = "ablations.json"
#: change name -> the TrainParams fields that switch it off
CHANGES: dict[str, dict[str, Any]] = {
    "photometric + camera augmentation (brightness/contrast/gamma, blur/noise, +-10 % zoom)":
        {"photometric": False, "degrade": False},
}
_FLAGS = {"photometric + camera augmentation (brightness/contrast/gamma, blur/noise, +-10 % zoom)":
          "camera"}


def ablate(data_dir: Path, out_dir: Path, folds: int, epochs: int, seed: int,
           only: list[str] | None = None) -> list[dict[str, Any]]:
    """Run the CV without each change of :data:`CHANGES` (or those whose flag is in ``only``)."""
    from models.train import TrainParams, _quiet_tf, cross_validate

    _quiet_tf()
    ds = load_dataset(Path(data_dir))
    base = TrainParams(seed=seed, epochs=epochs, cv_folds=folds)
    train_idx, _ = stratified_split(ds.y, base.test_frac, seed)
    results = []
    for change, off in CHANGES.items():
        flag = _FLAGS[change]
        if only and flag not in only:
            continue
        print(f"CV without: {change}", file=sys.stderr, flush=True)
        cv = cross_validate(ds.x[train_idx], ds.y[train_idx], replace(base, **off),
                            lambda m: print(m, file=sys.stderr, flush=True))
        results.append({
            "change": change,
            "without": {k: cv[k] for k in ("accuracy_mean", "accuracy_std", "perturbed_accuracy_mean",
                                           "perturbed_accuracy_std", "folds")},
            "command": f"python -m models.ablation --data {data_dir} --out {out_dir} --cv {folds} "
                       f"--epochs {epochs} --seed {seed} --only {flag}",
        })
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / ABLATIONS_NAME).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m models.ablation", description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path, help="model directory (ablations.json goes there)")
    ap.add_argument("--cv", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--seed", type=int, default=2020)
    ap.add_argument("--only", nargs="*", choices=sorted(set(_FLAGS.values())))
    args = ap.parse_args(argv)
    for r in ablate(args.data, args.out, args.cv, args.epochs, args.seed, args.only):
        w = r["without"]
        print(f"without {r['change']}: CV accuracy {w['accuracy_mean']:.3f} +/- {w['accuracy_std']:.3f}, "
              f"perturbed {w['perturbed_accuracy_mean']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
