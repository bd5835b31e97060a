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
        f"- **Output**: one sigmoid, p(undamaged) (the 2020 convention); >= {card['threshold']} "
        "(the card's threshold) means undamaged.",
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
    lines += _calibration_lines(m.get("calibration"))
    i8 = m.get("int8", {})
    if "held_out" in i8:
        lines += [f"INT8 (NNCF post-training quantization): held-out accuracy {i8['held_out']['accuracy']:.1%} "
                  f"vs {h['accuracy']:.1%} FP16; {'shipped as model-int8.xml' if i8['shipped'] else 'not shipped'}.", ""]
        a = i8.get("agreement")
        if a:
            lines += [f"INT8 vs float on {a['n']} tiles no training or quantizer calibration saw ({a['on']}): "
                      f"max |dp| {a['max_abs_dp']}, labels agree {a['label_agreement']:.1%}; "
                      + ("`precision: auto` runs INT8." if a["reproduces_float"]
                         else "`precision: auto` runs float."), ""]
    cost = m.get("cost_per_tile_ms")
    if cost:
        lines += ["Cost per tile (OpenVINO CPU, batch of 64, best of 5, on the training machine): "
                  + ", ".join(f"{k} {cost[k]} ms" for k in ("f32", "int8") if k in cost) + ".", ""]
    lines += _ablation_lines(card.get("ablations") or [])
    lines += [
        "## Files",
        "",
        *[f"- `{name}`: sha256 `{sha}`" for name, sha in card.get("sha256", {}).items()],
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in card["versions"].items()) + ".",
        "",
        "Training is bit-for-bit reproducible on the same CPU type and library versions "
        "(seeded, op determinism, one inter-op thread). "
        "Reproduce: `" + (t.get("command") or f"skysift model train --data {d['path']} --out models/damage-cnn "
                          f"--seed {t['split']['seed']} --epochs {t['epochs']}" + (f" --cv {cv['k']}" if cv else ""))
        + "`"
        + ("; ablations: `python -m models.ablation` (writes ablations.json and this card's table)"
           if card.get("ablations") else ""),
        "",
    ]
    path = out_dir / "MODEL_CARD.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _calibration_lines(c: dict[str, Any] | None) -> list[str]:
    if not c:
        return []
    o, h = c["out_of_fold"], c["held_out"]
    return [
        "## Calibration and threshold",
        "",
        f"{c['method']}: a = {c['platt']['a']}, b = {c['platt']['b']}. Threshold on p(undamaged): "
        f"**{c['threshold']}** ({c['threshold_method']}).",
        "",
        "| | Brier before | Brier after | ECE before | ECE after |",
        "|---|---|---|---|---|",
        f"| out of fold ({o['n']} tiles, cross-fitted) | {o['before']['brier']} | {o['after']['brier']} "
        f"| {o['before']['ece']} | {o['after']['ece']} |",
        f"| held out ({h['n']} tiles) | {h['before']['brier']} | {h['after']['brier']} "
        f"| {h['before']['ece']} | {h['after']['ece']} |",
        "",
    ]


def _ablation_lines(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return []
    out = ["## Ablations (cross-validated accuracy with and without each change)", "",
           "| change | in the shipped model | with | without | command |", "|---|---|---|---|---|"]
    for r in rows:
        w, wo = r["with"], r["without"]
        out.append(f"| {r['change']} | {'yes' if r.get('shipped') else 'no'} "
                   f"| {w['accuracy_mean']:.1%} +/- {w['accuracy_std']:.1%}"
                   + _perturbed(w) + f" | {wo['accuracy_mean']:.1%} +/- {wo['accuracy_std']:.1%}"
                   + _perturbed(wo) + f" | `{r['command']}` |")
    return out + ["", "(perturbed: accuracy of the fold models on rotated / brightened / contrast-changed "
                  "/ noisy copies of their validation tiles)", ""]


def _perturbed(d: dict[str, Any]) -> str:
    return f" (perturbed {d['perturbed_accuracy_mean']:.1%})" if "perturbed_accuracy_mean" in d else ""
