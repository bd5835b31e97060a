"""``MODEL_CARD.md``: the JSON model card retold for people, written beside it by training."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def write_markdown(out_dir: Path, card: dict[str, Any]) -> Path:
    """A short human-readable MODEL_CARD.md beside the JSON card."""
    m = card["metrics"]
    h = m["held_out"]
    cm = h["confusion_matrix"]["matrix"]
    t = card["training"]
    d = t["data"]
    lines = [
        f"# {card['name']} (architecture {card['architecture']}, {card['parameters']:,} parameters)",
        "",
        "Classifies 128x128 grayscale aerial tiles as damaged or undamaged.",
        "",
        f"- **Input**: {card['input']['height']}x{card['input']['width']}x1 NHWC float32 = u8 / 255.",
        "- **Output**: one sigmoid, p(undamaged); >= 0.5 means undamaged (the 2020 convention).",
        f"- **Training data**: `{d['path']}`: {d['counts']['damaged']} damaged, "
        f"{d['counts']['undamaged']} undamaged (files sha256 `{d['files_sha256'][:16]}...`).",
        f"- **Split**: stratified, seed {t['split']['seed']}: {t['split']['train']} tiles for training, "
        f"{t['split']['held_out']} held out and never seen in training. The shipped model is trained "
        "on the training split only, so the figures below are the shipped model's own.",
        f"- **Training**: {t['epochs']} epochs, {t['optimizer']}, {t['loss']}; augmentation: "
        f"{t['augmentation']}.",
        "",
        f"## Held-out results ({h['n']} tiles, OpenVINO IR)",
        "",
        f"Accuracy **{h['accuracy']:.1%}**"
        + (f" (95 % Wilson interval {h['accuracy_ci95'][0]:.1%} to {h['accuracy_ci95'][1]:.1%})"
           if "accuracy_ci95" in h else "")
        + f"; damaged class: precision {h['precision_damaged']:.1%}, "
        f"recall {h['recall_damaged']:.1%}, F1 {h['f1_damaged']:.3f}.",
        "",
        "| true \\ predicted | damaged | undamaged |",
        "|---|---|---|",
        f"| damaged | {cm[0][0]} | {cm[0][1]} |",
        f"| undamaged | {cm[1][0]} | {cm[1][1]} |",
        "",
    ]
    cv = m.get("cross_validation")
    if cv:
        lines += [f"{cv['k']}-fold stratified cross-validation on the training split: accuracy "
                  f"{cv['accuracy_mean']:.1%} +/- {cv['accuracy_std']:.1%} (folds: "
                  f"{', '.join(f'{a:.2f}' for a in cv['folds'])}).", ""]
    i8 = m.get("int8", {})
    if "held_out" in i8:
        lines += [f"INT8 (NNCF post-training quantization): held-out accuracy {i8['held_out']['accuracy']:.1%} "
                  f"vs {h['accuracy']:.1%} FP16; {'shipped as model-int8.xml' if i8['shipped'] else 'not shipped'}.", ""]
    lines += [
        "## Files",
        "",
        *[f"- `{name}`: sha256 `{sha}`" for name, sha in card.get("sha256", {}).items()],
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in card["versions"].items()) + ".",
        "",
        "Training is bit-for-bit reproducible on the same CPU type and library versions "
        "(seeded, op determinism, one inter-op thread). "
        f"Reproduce: `skysift model train --data {d['path']} --out models/damage-cnn --seed "
        f"{t['split']['seed']} --epochs {t['epochs']}"
        + (f" --cv {cv['k']}" if cv else "") + "`",
        "",
    ]
    path = out_dir / "MODEL_CARD.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
