"""``python -m models.ablation``: cross-validated accuracy with each training change toggled.

Every change to training must be justified by the data: this runs the same k-fold CV as
``skysift model train --cv K`` (same folds, same seeds) with one change toggled against the
shipped configuration, writes the results to ``ablations.json`` in the model directory and puts
them in its card beside the card's own CV (``skysift model train`` keeps them when it retrains).
Minutes of CPU per change: run by hand, never in CI.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from models.dataset import load_dataset, provenance_path, stratified_split

ABLATIONS_NAME = "ablations.json"
#: change name -> the TrainParams fields of the variant (the shipped configuration toggled)
CHANGES: dict[str, dict[str, Any]] = {
    "photometric + camera augmentation (brightness/contrast/gamma, blur/noise, +-10 % zoom)":
        {"photometric": True, "degrade": True},
}
_FLAGS = {"photometric + camera augmentation (brightness/contrast/gamma, blur/noise, +-10 % zoom)":
          "camera"}


def ablate(data_dir: Path, out_dir: Path, folds: int, epochs: int, seed: int,
           only: list[str] | None = None) -> list[dict[str, Any]]:
    """Run the CV of each variant of :data:`CHANGES` (or those whose flag is in ``only``)."""
    from models.card import CARD_NAME, load_card, write_card
    from models.card_markdown import write_markdown
    from models.train import TrainParams, _quiet_tf, cross_validate
    from models.train_report import ablations

    _quiet_tf()
    ds = load_dataset(Path(data_dir))
    base = TrainParams(seed=seed, epochs=epochs, cv_folds=folds)
    train_idx, _ = stratified_split(ds.y, base.test_frac, seed)
    results = []
    for change, off in CHANGES.items():
        flag = _FLAGS[change]
        if only and flag not in only:
            continue
        variant = replace(base, **off)
        has_change = any(getattr(variant, k) != getattr(base, k) and bool(v) for k, v in off.items())
        print(f"CV {'with' if has_change else 'without'}: {change}", file=sys.stderr, flush=True)
        cv = cross_validate(ds.x[train_idx], ds.y[train_idx], variant,
                            lambda m: print(m, file=sys.stderr, flush=True))
        results.append({
            "change": change,
            "variant_has_change": has_change,
            "variant": {k: cv[k] for k in ("accuracy_mean", "accuracy_std", "perturbed_accuracy_mean",
                                           "perturbed_accuracy_std", "folds")},
            "command": f"python -m models.ablation --data {provenance_path(data_dir)} "
                       f"--out {provenance_path(out_dir)} --cv {folds} "
                       f"--epochs {epochs} --seed {seed} --only {flag}",
        })
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / ABLATIONS_NAME).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    if (out_dir / CARD_NAME).exists():
        card = load_card(out_dir).data
        card["ablations"] = ablations(out_dir, card)
        write_card(out_dir, card)
        write_markdown(out_dir, load_card(out_dir).data)
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
        w = r["variant"]
        print(f"{'with' if r['variant_has_change'] else 'without'} {r['change']}: CV accuracy "
              f"{w['accuracy_mean']:.3f} +/- {w['accuracy_std']:.3f}, perturbed {w['perturbed_accuracy_mean']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
