"""`skysift model train|convert|info`: build, import and inspect model directories."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from agent.cli.common import show_path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "model",
        help="train, convert or inspect a model",
        description="Model directories (model.path): train one on your tiles, convert your own "
        "network into one, or show one's card and verify its files.",
    )
    sub = p.add_subparsers(dest="model_command", metavar="ACTION", required=True)

    t = sub.add_parser(
        "train",
        help="train the damage CNN on DIR/damaged and DIR/undamaged",
        description="Train the CNN, export .keras + OpenVINO IR (+ INT8 if it keeps accuracy) "
        "and write the model card. Deterministic for a given seed.",
    )
    t.add_argument("--data", required=True, type=Path, metavar="DIR", help="folder with damaged/ and undamaged/")
    t.add_argument("--out", required=True, type=Path, metavar="DIR", help="model directory to write")
    t.add_argument("--seed", type=int, default=2020, help="split, initialisation and augmentation seed "
                   "(default 2020, the shipped model's)")
    t.add_argument("--epochs", type=int, default=None, help="default: 40")
    t.add_argument("--cv", type=int, default=0, metavar="K",
                   help="also run K-fold stratified cross-validation on the training split")
    t.add_argument("--test-frac", type=float, default=0.25, help="held-out fraction (default 0.25)")
    t.add_argument("--architecture", default=None, choices=["cnn2020", "cnn2020-bn"],
                   help="cnn2020 (the 2020 network as published) or cnn2020-bn (default, shipped)")
    t.add_argument("--no-augment", action="store_true", help="train without any augmentation")
    t.add_argument("--photometric", action="store_true",
                   help="add brightness/contrast/gamma augmentation (an ablation: off when shipped)")
    t.add_argument("--degrade", action="store_true",
                   help="add blur/noise/zoom augmentation (an ablation: off when shipped)")
    t.add_argument("--no-int8", action="store_true", help="skip INT8 quantization")
    t.set_defaults(func=_train)

    c = sub.add_parser(
        "convert",
        help="convert a .keras / legacy .h5 / SavedModel / .onnx to OpenVINO IR + card",
        description="Turn your own model into a skysift model directory (set model.path to it). "
        "The model must take one square 1- or 3-channel image scaled to [0,1] (NHWC, or NCHW "
        "for ONNX) and output one sigmoid [N,1] or an N-class softmax [N,C]. A model the "
        "engines cannot run is refused with the reason, and nothing is written.",
    )
    c.add_argument("src", type=Path, metavar="SRC", help=".keras, .h5 or .onnx file, or SavedModel directory")
    c.add_argument("--out", required=True, type=Path, metavar="DIR", help="model directory to write")
    c.add_argument("--output-meaning", choices=["p_undamaged", "p_damaged"], default="p_undamaged",
                   help="what the sigmoid means (2020 convention: p_undamaged)")
    c.add_argument("--output-kind", choices=["sigmoid", "softmax"], default=None,
                   help="default: sigmoid for an [N,1] output, softmax for [N,C]")
    c.add_argument("--damaged-classes", type=_int_list, default=None, metavar="I,J",
                   help="softmax classes that count as damaged (p_damaged is their sum), e.g. 0 or 1,3")
    c.add_argument("--labels", type=lambda v: v.split(","), default=None, metavar="A,B",
                   help="class names in output order (default: damaged,undamaged for a sigmoid)")
    c.add_argument("--fp32", action="store_true",
                   help="keep f32 weights (default: FP16-compressed, half the size)")
    c.set_defaults(func=_convert)

    i = sub.add_parser(
        "info",
        help="show a model card and verify every file's sha256",
        description="Print DIR's model card (input, output, threshold, engines, accuracy) after "
        "verifying the sha256 of every file it lists; exit 1 if one differs.",
    )
    i.add_argument("dir", nargs="?", type=Path, default=None, metavar="DIR", help="model directory (default: shipped)")
    i.add_argument("--json", action="store_true", help="print the card as JSON")
    i.set_defaults(func=_info)


def _int_list(value: str) -> list[int]:
    try:
        return [int(v) for v in value.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a comma-separated list of class indices") from None


def _train(args: argparse.Namespace) -> int:
    from models.train import TrainParams, train

    p = TrainParams(seed=args.seed, cv_folds=args.cv, test_frac=args.test_frac,
                    augment=not args.no_augment, int8=not args.no_int8,
                    photometric=args.photometric, degrade=args.degrade)
    if args.epochs is not None:
        p.epochs = args.epochs
    if args.architecture:
        p.architecture = args.architecture
    card = train(args.data, args.out, p, progress=lambda m: print(m, file=sys.stderr, flush=True))
    h = card["metrics"]["held_out"]
    print(f"wrote {show_path(args.out)}: held-out accuracy {h['accuracy']:.1%} on {h['n']} tiles, "
          f"F1(damaged) {h['f1_damaged']:.3f}")
    return 0


def _convert(args: argparse.Namespace) -> int:
    from models.convert import convert

    path = convert(args.src, args.out, output_meaning=args.output_meaning, output_kind=args.output_kind,
                   damaged_classes=args.damaged_classes, labels=args.labels, fp16=not args.fp32)
    print(f"wrote {show_path(path)}")
    return 0


def _info(args: argparse.Namespace) -> int:
    from models.card import load_card

    card = load_card(args.dir)
    card.verify_all()  # raises ModelIntegrityError, which the CLI reports with exit 1
    d = card.data
    if args.json:
        print(json.dumps(d, indent=2))
        return 0
    inp = d["input"]
    print(f"{d.get('name', '?')} in {card.dir}")
    print(f"  input   {inp['height']}x{inp['width']}x{inp.get('channels', 1)} {inp.get('layout', 'NHWC')} "
          f"{inp.get('dtype', 'float32')} (u8 * {inp.get('scale', 1 / 255):.6g})")
    if card.output_kind == "softmax":
        damaged = ", ".join(d.get("labels", {}).get(str(i), str(i)) for i in card.damaged_classes)
        print(f"  output  {card.classes}-class softmax, p_damaged = p({damaged}), threshold {card.threshold}")
    else:
        print(f"  output  {d.get('output', {}).get('meaning', 'p_undamaged')}, threshold {card.threshold}")
    print(f"  engines {', '.join(card.engines)}")
    print(f"  files   {', '.join(f'{k}={v}' for k, v in d['files'].items())}")
    held = d.get("metrics", {}).get("held_out")
    if held:
        print(f"  held-out accuracy {held['accuracy']:.1%} on {held['n']} tiles, precision(damaged) "
              f"{held['precision_damaged']:.1%}, recall(damaged) {held['recall_damaged']:.1%}")
    cv = (d.get("metrics") or {}).get("cross_validation")
    if cv:
        print(f"  {cv['k']}-fold CV accuracy {cv['accuracy_mean']:.1%} +/- {cv['accuracy_std']:.1%}")
    if "converted_from" in d:
        print(f"  converted from {d['converted_from']['path']} ({d['converted_from']['format']})")
    print(f"  sha256  all {len(d['sha256'])} files verified")
    return 0
