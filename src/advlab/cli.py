"""Command line: argument parsing only; every command is a job in :mod:`advlab.runs`.

    advlab demo                         train, attack and report in one go (the main job)
    advlab train --data fashion-mnist --model small-cnn --epochs 2 --out runs/cnn
    advlab attack --checkpoint runs/cnn --attack pgd --eps 0.1 --out runs/cnn/pgd
    advlab evaluate --checkpoint runs/cnn --attacks fgsm,pgd --eps 0.05,0.1,0.2 --out runs/cnn/eval
    advlab audit --checkpoint runs/cnn --eps 0.1 --out runs/cnn/audit
    advlab geometry --checkpoint runs/cnn --out runs/cnn/geometry
    advlab list                         architectures, datasets and attacks
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
import zipfile
from typing import Any, Sequence

EPILOG = """examples:
  advlab demo --out report
  advlab train --data fashion-mnist --model small-cnn --epochs 2 --out runs/cnn
  advlab attack --checkpoint runs/cnn --attack mifgsm --eps 0.1 --targeted --out runs/cnn/mifgsm
  advlab evaluate --checkpoint runs/cnn --attacks fgsm,ifgsm,pgd,mifgsm --eps 0.01,0.05,0.1 --out runs/cnn/eval
  advlab evaluate --checkpoint runs/cnn --attacks pgd --strong --eps 0.1 --out runs/cnn/strong
  advlab measure --checkpoint runs/cnn --attacks deepfool,fmn --norm l2 --out runs/cnn/minimal
  advlab attack --checkpoint runs/cnn --attack square --eps 0.1 --budget 1000 --out runs/cnn/square
  advlab defend --recipe pgd --data fashion-mnist --epochs 2 --eps 0.1 --out runs/pgd
"""


def _float_list(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers like 0.01,0.1, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one number")
    return values


def _name_list(text: str) -> list[str]:
    names = [v.strip() for v in text.split(",") if v.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected comma-separated names like fgsm,pgd")
    return names


UNIVERSAL = "uap, patch"  # `advlab attack` runs them through runs.universal, not the registry
MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed takes a signed 64-bit integer


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"a seed must be between 0 and 2**63 - 1, got {value}")
    return value


def _whole(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"expected a number >= {minimum}, got {value}")
    return value


def _count(text: str) -> int:
    return _whole(text, 0)


def _positive_int(text: str) -> int:
    return _whole(text, 1)


def _job_options(p: argparse.ArgumentParser, *, seed: bool = True, progress: bool = True) -> None:
    """The tail every job command shares: its seed, the data of its checkpoint, --out, progress."""
    if seed:
        p.add_argument("--seed", type=_seed, default=0)
    _data_options(p, default=None)
    p.add_argument("--out", required=True, metavar="DIR")
    if progress:
        p.add_argument("--no-progress", action="store_true")


# --debug is also accepted after the command (advlab attack ... --debug); SUPPRESS keeps the
# top-level value when it is not repeated there
_DEBUG = argparse.ArgumentParser(add_help=False)
_DEBUG.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                    help="show full tracebacks on errors")


def _command(sub: Any, name: str, **kwargs: Any) -> argparse.ArgumentParser:
    """A subcommand's parser (every one takes --debug)."""
    return sub.add_parser(name, parents=[_DEBUG], **kwargs)


def _model_options(p: argparse.ArgumentParser) -> None:
    """The model a command runs on (every command that loads one takes the same options): a zoo
    checkpoint, or the user's own model from a factory they name; and the device."""
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--checkpoint", metavar="DIR", help="a directory written by advlab train")
    which.add_argument("--model", metavar="MODULE:FACTORY",
                       help="your own model: a function or class returning an nn.Module of logits, as "
                            "package.module:name or path/file.py:name (imported because you name it; "
                            "needs --data)")
    which.add_argument("--sklearn", metavar="FILE.skops",
                       help="a fitted scikit-learn classifier saved with skops (never pickle), fitted on the "
                            "data's features flattened, labels 0..K-1 (needs --data)")
    p.add_argument("--trust", action="append", default=[], metavar="TYPE",
                   help="--sklearn: a type in the file that skops does not trust by default (repeat; read "
                        "the file's origin first)")
    g = p.add_argument_group("your own model (--model)")
    g.add_argument("--weights", metavar="FILE.safetensors",
                   help="a state dict for --model's module (safetensors only: loading it runs no code)")
    g.add_argument("--input-shape", type=_int_tuple, metavar="C,H,W", help="one input's shape (default: the data's)")
    g.add_argument("--bounds", type=_bounds, default=(0.0, 1.0), metavar="LO,HI",
                   help="the input box the model takes (default 0,1; write --bounds=-1,1 when LO is negative)")
    g.add_argument("--mean", type=_float_list, metavar="M1,M2,..",
                   help="per-channel mean; normalisation goes inside the model (with --std)")
    g.add_argument("--std", type=_float_list, metavar="S1,S2,..", help="per-channel standard deviation")
    g.add_argument("--classes", type=_positive_int, metavar="K", help="the number of logits (checked)")
    p.add_argument("--device", default="cpu", metavar="DEVICE",
                   help="where the model and data run: cpu, cuda, cuda:N, mps or auto (default cpu)")


def _int_tuple(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.replace(" ", "").split(",") if v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers like 3,32,32, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive whole numbers like 3,32,32, got {text!r}")
    return values


def _bounds(text: str) -> tuple[float, float]:
    values = _float_list(text)
    if len(values) != 2 or not values[0] < values[1]:
        raise argparse.ArgumentTypeError(f"expected LO,HI with LO < HI, like 0,1, got {text!r}")
    return values[0], values[1]


def _source(args: argparse.Namespace) -> Any:
    """The model a command runs on: ``--checkpoint DIR``, a :class:`UserModel` from ``--model``, or
    a :class:`~advlab.models.sklearn.SklearnModel` from ``--sklearn``."""
    if getattr(args, "sklearn", None) is not None:
        from advlab.models.sklearn import SklearnModel

        return SklearnModel(path=args.sklearn, trusted=tuple(args.trust), dataset=getattr(args, "data", None))
    if getattr(args, "trust", None):
        raise ValueError("--trust names types in a --sklearn estimator file; there is none here")
    if getattr(args, "model", None) is None:
        own = [f"--{k.replace('_', '-')}" for k in ("weights", "input_shape", "mean", "std", "classes")
               if getattr(args, k, None) is not None]
        if own or tuple(getattr(args, "bounds", (0.0, 1.0))) != (0.0, 1.0):
            raise ValueError(f"{', '.join(own) or '--bounds'} describe(s) your own --model; a --checkpoint "
                             "carries its own card")
        return args.checkpoint
    from advlab.models.user import UserModel

    return UserModel(factory=args.model, weights=args.weights, input_shape=args.input_shape,
                     num_classes=args.classes, mean=args.mean, std=args.std, bounds=args.bounds,
                     dataset=args.data)


def _points_options(p: argparse.ArgumentParser, *, n: int, batch_size: int | None,
                    what: str = "test images") -> None:
    """``--n`` (how many points a command runs on) and, where it batches them, ``--batch-size``."""
    p.add_argument("--n", "--points", dest="n", type=_positive_int, default=n, help=f"{what} (default {n})")
    if batch_size is not None:
        p.add_argument("--batch-size", type=_positive_int, default=batch_size)


def _norm_option(p: argparse.ArgumentParser, *, default: str | None, first: str = "linf",
                 help: str | None = None, l0: bool = False) -> None:
    norms = [first] + [n for n in ("linf", "l2", "l1") if n != first] + (["l0"] if l0 else [])
    p.add_argument("--norm", choices=norms, default=default, help=help)


def _data_options(p: argparse.ArgumentParser, *, default: str | None) -> None:
    p.add_argument("--data", default=default, metavar="NAME",
                   help="dataset: a name of `advlab list` (fashion-mnist, digits, breast-cancer, basic-motions, "
                        "...), npz:PATH, csv:PATH or folder:PATH"
                        + (f" (default {default})" if default else " (default: the checkpoint's)"))
    p.add_argument("--data-dir", metavar="DIR", help="directory holding the dataset files")
    p.add_argument("--download", action="store_true",
                   help="download the dataset (checksummed, cached) if it is not found locally")


def build_parser() -> argparse.ArgumentParser:
    from advlab import __version__
    from advlab.attacks.registry import BLACKBOX, known_names, spelling

    parser = argparse.ArgumentParser(
        prog="advlab", description="Attack, defend and measure the adversarial robustness of classifiers.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"advlab {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")


    p = _command(sub, "demo", help="train a small CNN, attack it over ε, write a report (the main job)",
                       description="Train a small CNN on Fashion-MNIST (or the digits set when Fashion-MNIST "
                                   "is not installed), attack it with FGSM, I-FGSM, PGD and MI-FGSM over "
                                   "ε in 0.01,0.05,0.1,0.15,0.2,0.5,0.7, and write a report folder.")
    p.add_argument("--out", default="report", metavar="DIR", help="report folder (default: report)")
    p.add_argument("--epochs", type=_positive_int, help="training epochs (default 2; 20 on digits)")
    p.add_argument("--n", "--points", dest="n", type=_positive_int, default=1000, help="test images to attack (default 1000)")
    p.add_argument("--seed", type=_seed, default=0, help="random seed (default 0)")
    p.add_argument("--data-dir", metavar="DIR", help="directory holding the Fashion-MNIST files")
    p.add_argument("--data", metavar="NAME", help="dataset (default: fashion-mnist if installed, else digits)")
    p.add_argument("--quick", action="store_true",
                   help="a one-minute run: 2,000 training images, 200 test images, 1 epoch (5 on digits)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")

    p = _command(sub, "train", help="train a zoo architecture and save a checkpoint",
                       description="Train a model from the zoo and save it as safetensors + a JSON card.")
    _data_options(p, default="fashion-mnist")
    p.add_argument("--model", default="small-cnn", metavar="NAME",
                   help="architecture: mlp, lenet5, small-cnn, small-resnet (default small-cnn)")
    p.add_argument("--epochs", type=_positive_int, default=2, help="training epochs (default 2)")
    p.add_argument("--batch-size", type=_positive_int, default=128)
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate (default 1e-3, Adam)")
    p.add_argument("--seed", type=_seed, default=0)
    p.add_argument("--limit", type=_positive_int, help="train on the first N training images only")
    p.add_argument("--out", required=True, metavar="DIR", help="checkpoint directory to write")
    p.add_argument("--overwrite", action="store_true", help="replace an existing checkpoint")
    p.add_argument("--no-progress", action="store_true")

    p = _command(sub, "attack", help="attack a saved model; save adversarial examples, metrics, gallery",
                       description="Attack a checkpoint on test images and write adversarial.safetensors, "
                                   "metrics.json and gallery.png into --out.")
    _model_options(p)
    p.add_argument("--attack", default="pgd", metavar="NAME",
                   help=f"white-box: {known_names(access='gradients')}; black-box (query the model only): "
                        f"{', '.join(spelling(k) for k in BLACKBOX)}; universal: {UNIVERSAL} (see `advlab list`; "
                        "default pgd)")
    p.add_argument("--eps", type=float, help="perturbation budget ε (inputs are in [0, 1]); not for "
                                             f"minimal-perturbation attacks ({known_names(kind='minimal')})")
    _norm_option(p, default=None, help="threat model norm (default linf; l0 for jsma, pgd-l0: --eps "
                                         "then counts changed features)", l0=True)
    p.add_argument("--steps", type=_positive_int,
                   help="iterations of iterative attacks (default: 20 for PGD, as in every command; the "
                        "attack's own default for the others)")
    p.add_argument("--step-size", type=float, help="step size α (default depends on the attack)")
    p.add_argument("--targeted", action="store_true", help="aim at a random wrong class per image")
    p.add_argument("--budget", "--queries", dest="budget", type=_positive_int,
                   help="black-box attacks: query budget per point (the oracle refuses queries past it; "
                        "--queries is its old name)")
    p.add_argument("--fit-n", type=_positive_int, default=1000,
                   help="uap / patch: training images the universal perturbation is fitted on (default 1000)")
    p.add_argument("--method", choices=["sgd", "deepfool"], default="sgd", help="uap: fitting method (default sgd)")
    p.add_argument("--passes", type=_positive_int, help="uap: passes over the fitting data (default 3)")
    p.add_argument("--target-class", type=int, help="uap (targeted) / patch: the class to send inputs to")
    p.add_argument("--patch-size", type=float, default=0.1, help="patch: fraction of the image area (default 0.1)")
    p.add_argument("--source", metavar="DIR",
                   help="transfer: craft the (white-box) attack on this checkpoint, evaluate on --checkpoint "
                        "through a label-only oracle")
    _points_options(p, n=100, batch_size=250, what="test images to attack")
    _job_options(p)

    p = _command(sub, "evaluate", help="accuracy against ε for several attacks: table and plot",
                       description="Clean and robust accuracy of a checkpoint for each attack at each ε "
                                   "(iterative attacks in evaluation mode), with a worst case per point.")
    _model_options(p)
    p.add_argument("--attacks", type=_name_list,
                   help="comma-separated attacks (default fgsm,ifgsm,pgd,mifgsm; square,simba for a --sklearn "
                        "estimator with no gradients)")
    p.add_argument("--eps", type=_float_list, default=[0.01, 0.05, 0.1, 0.15, 0.2, 0.5, 0.7],
                   help="comma-separated increasing ε values (default 0.01,0.05,0.1,0.15,0.2,0.5,0.7)")
    p.add_argument("--strong", action="store_true",
                   help="also run the strong cascade APGD-CE → APGD-T (Croce & Hein 2020) at each ε and "
                        "report the worst case per point; its per-point record in OUT/strong/ lets the "
                        "same command resume an interrupted run")
    p.add_argument("--strong-version", choices=["fast", "standard"], default="fast",
                   help="--strong's attack list: fast (APGD-CE → APGD-T, the default) or standard (AutoAttack's "
                        "APGD-CE → APGD-T → FAB-T → Square)")
    _norm_option(p, default="linf", help="threat model norm (default linf; l0 for jsma, pgd-l0: --eps then "
                                        "counts changed features)", l0=True)
    p.add_argument("--steps", type=_positive_int,
                   help="iterations of iterative attacks (default: 20 for PGD, as in every command; the "
                        "attack's own default for the others)")
    p.add_argument("--step-size", type=float)
    _points_options(p, n=1000, batch_size=250)
    _job_options(p)

    p = _command(sub, "measure", help="minimal perturbations per point, their distribution and the accuracy-vs-ε curve",
                       description="Run minimal-perturbation attacks (DeepFool, FMN, C&W L2) on the correctly "
                                   "classified test points, keep each point's smallest distance, and read the "
                                   "whole robust-accuracy-vs-ε curve off the distances in one pass; writes "
                                   "minimal.json, minimal.md, minimal_norms.png and index.html.")
    _model_options(p)
    p.add_argument("--attacks", type=_name_list,
                   help="comma-separated minimal-norm attacks: deepfool, fmn, cw, tree (default deepfool,fmn; "
                        "tree for a --sklearn decision tree)")
    _norm_option(p, default="l2", first="l2", help="distance to minimise (default l2)")
    p.add_argument("--eps", type=_float_list, help="increasing radii at which to tabulate robust accuracy "
                                                   "(default depends on the norm)")
    p.add_argument("--steps", type=_positive_int, help="iterations of DeepFool / FMN")
    _points_options(p, n=1000, batch_size=250)
    _job_options(p, seed=False)

    p = _command(sub, "defend", help="train with a defense recipe; compare with the undefended model",
                       description="Train a zoo architecture with a defense recipe (adversarial training: "
                                   "fgsm-mix, pgd, fast, trades, ensemble; distill; vat), save it as a "
                                   "checkpoint, and compare it with the undefended model: clean accuracy and "
                                   "robust accuracy over ε under white-box PGD, transfer from a held-out "
                                   "surrogate and the black-box Square attack. Running the same command "
                                   "again resumes interrupted training.")
    p.add_argument("--recipe", required=True, choices=["standard", "fgsm-mix", "pgd", "fast", "trades",
                                                        "ensemble", "distill", "vat", "ibp", "gaussian", "ovr"],
                   help="ibp: interval-bound training at --eps (certify with `advlab certify --method ibp`); "
                        "gaussian: training under noise of --sigma (certify with --method smoothing); "
                        "ovr: an RBF network (--model rbf) trained with its one-vs-rest unit likelihood")
    _data_options(p, default="fashion-mnist")
    p.add_argument("--model", default="small-cnn", metavar="NAME", help="architecture (default small-cnn)")
    p.add_argument("--epochs", type=_positive_int, default=2)
    p.add_argument("--eps", type=float, default=0.1, help="L∞ ε of training and evaluation (default 0.1)")
    p.add_argument("--eval-eps", type=_float_list, help="ε values of the comparison (default ε/2, ε, 2ε)")
    p.add_argument("--steps", type=_positive_int, help="attack steps inside pgd/trades training")
    p.add_argument("--alpha", type=float, default=0.5, help="fgsm-mix / ensemble: weight of the clean loss")
    p.add_argument("--beta", type=float, default=6.0, help="trades: β")
    p.add_argument("--temperature", type=float, default=100.0, help="distill: T (default 100)")
    p.add_argument("--vat-eps", type=float, default=2.0, help="vat: L2 radius of the virtual perturbation")
    p.add_argument("--sigma", type=float, default=0.25, help="gaussian: noise standard deviation (default 0.25)")
    p.add_argument("--labels", type=_positive_int, help="vat: keep N labels, the rest of the data unlabelled")
    p.add_argument("--static", action="append", default=[], metavar="DIR",
                   help="ensemble: a static pre-trained model (repeatable; default: train an mlp and a lenet5)")
    p.add_argument("--baseline", metavar="DIR", help="the undefended checkpoint (default: train one)")
    p.add_argument("--surrogate", metavar="DIR", help="transfer source checkpoint (default: train one)")
    p.add_argument("--budget", "--queries", dest="budget", type=_positive_int, default=1000,
                   help="Square's query budget per point (default 1000; --queries is its old name)")
    p.add_argument("--limit", type=_positive_int, help="train on the first N training images only")
    _points_options(p, n=500, batch_size=128, what="test images of the comparison")
    p.add_argument("--lr", type=float, help="Adam learning rate (default 1e-3; 1e-2 for distill)")
    p.add_argument("--lr-schedule", choices=["constant", "linear", "cosine", "cyclic"], default="constant",
                   help="learning-rate schedule over all steps (cyclic: Wong et al. 2020's fast training)")
    p.add_argument("--seed", type=_seed, default=0)
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--no-progress", action="store_true")

    p = _command(sub, "certify", help="certified robustness: randomized smoothing (L2) or IBP (L∞)",
                       description="Certify a checkpoint on test images: randomized smoothing (Cohen et al. "
                                   "2019: the smoothed classifier's certified L2 radius per point, with "
                                   "abstention) or interval bound propagation (Gowal et al. 2018: a verified "
                                   "L∞ radius of the model itself, beside PGD's robust accuracy, which it must "
                                   "never exceed); writes certify.json, certify.md, certified_accuracy.png and "
                                   "index.html.")
    _model_options(p)
    p.add_argument("--method", choices=["smoothing", "ibp"], default="smoothing")
    p.add_argument("--radii", type=_float_list, help="increasing radii of the table (default: 0,0.25,0.5,0.75,1 "
                                                     "for smoothing, 0,0.01,0.02,0.05,0.1 for ibp)")
    p.add_argument("--sigma", type=float, default=0.25, help="smoothing: noise standard deviation (default 0.25)")
    p.add_argument("--samples", type=_positive_int, default=1000,
                   help="smoothing: noise samples that bound each point's probability (default 1000)")
    p.add_argument("--alpha", type=float, default=0.001, help="smoothing: failure probability (default 0.001)")
    p.add_argument("--pgd-steps", type=_positive_int, default=20, help="ibp: steps of the PGD beside it (default 20)")
    _points_options(p, n=200, batch_size=1000, what="test images to certify")
    _job_options(p, progress=False)

    p = _command(sub, "fooling", help="fooling images from noise, and how sure the model is of plain noise",
                       description="Push uniform and Gaussian noise to every class with a targeted PGD until the "
                                   "model's probability reaches --level (Nguyen et al. 2015), draw them per class, "
                                   "and count how often plain, unattacked noise is already classified that "
                                   "confidently; writes fooling.json, fooling.md and fooling_<noise>.png.")
    _model_options(p)
    p.add_argument("--level", type=float, default=0.99, help="the confidence to reach (default 0.99)")
    p.add_argument("--per-class", type=_positive_int, default=4, help="fooling images per class (default 4)")
    p.add_argument("--steps", type=_positive_int, default=200, help="PGD steps at most (default 200)")
    p.add_argument("--noise-n", type=_positive_int, default=1000, help="plain noise samples (default 1000)")
    _job_options(p, progress=False)

    p = _command(sub, "audit", help="check an evaluation for gradient masking (Carlini et al. 2019)",
                       description="Run the gradient-masking checks on a checkpoint: logits not probabilities, "
                                   "determinism, non-zero gradients, iterative beats single-step, success rises "
                                   "with ε and reaches 100% unbounded, white-box beats transfer and random noise. "
                                   "Exits with status 1 when a check fails.")
    _model_options(p)
    p.add_argument("--eps", type=float, required=True, help="the ε of the evaluation being audited")
    _norm_option(p, default="linf")
    p.add_argument("--steps", type=_positive_int, default=20, help="PGD steps (default 20)")
    _points_options(p, n=500, batch_size=None)
    _job_options(p, progress=False)

    p = _command(sub, "geometry", help="decision-boundary maps, adversarial subspace dimension, cosine of updates",
                       description="Decision-boundary cross-sections (FGSM direction × random orthogonal "
                                   "direction), the gradient-aligned adversarial subspace dimension (Tramèr "
                                   "et al. 2017) and the cosine similarity of successive I-FGSM / MI-FGSM updates.")
    _model_options(p)
    p.add_argument("--n-maps", type=_positive_int, default=6, help="decision maps to draw (default 6)")
    p.add_argument("--extent", type=float, default=0.3, help="half-width of each map in ε (default 0.3)")
    p.add_argument("--resolution", type=_positive_int, default=41)
    p.add_argument("--gaas-eps", type=_float_list, default=[1.0, 2.0, 4.0], help="L2 radii for GAAS")
    p.add_argument("--max-directions", type=_positive_int, default=64)
    p.add_argument("--n-gaas", type=_positive_int, default=200)
    p.add_argument("--eps", type=float, default=0.1, help="L∞ ε of the cosine-similarity attacks")
    p.add_argument("--steps", type=_positive_int, default=10)
    p.add_argument("--n", "--points", dest="n", type=_positive_int, default=500, help="images for the cosine similarity")
    p.add_argument("--clip", action="store_true", help="clip map and GAAS points to [0, 1]")
    _job_options(p)

    p = _command(sub, "bounds", help="Fawzi et al. (2018) robustness bounds against measured robustness",
                       description="Train (or load) a VAE generator of the data, estimate its Lipschitz "
                                   "constant, and measure latent, in-distribution and unconstrained "
                                   "robustness of each classifier at generated points, beside the Theorem 1 "
                                   "bound; writes bounds.json, bounds.md and bounds_cdf.png.")
    p.add_argument("--checkpoint", action="append", required=True, metavar="NAME=DIR",
                   help="a classifier column (repeatable), e.g. --checkpoint cnn=runs/cnn")
    p.add_argument("--vae", metavar="DIR", help="VAE directory to load or train into (default OUT/vae)")
    p.add_argument("--latent-dim", type=_positive_int, default=10)
    p.add_argument("--vae-epochs", type=_positive_int, default=8)
    p.add_argument("--n", "--points", dest="n", type=_positive_int, default=200, help="generated points per classifier")
    p.add_argument("--lipschitz-samples", type=_positive_int, default=256)
    p.add_argument("--projected", type=_count, default=0, metavar="N",
                   help="Theorem 2: the projected classifier f(g(argmin ||g(z) - x||)) at the first N points "
                        "(decision-based and BPDA attacks; slow: every query runs a projection); default 0: off")
    p.add_argument("--transfer", action="store_true",
                   help="Theorem 3: the rate at which one perturbation fools both classifiers of each pair")
    p.add_argument("--query-budget", type=_positive_int, default=1000,
                   help="HopSkipJump queries per point on the projected classifier (default 1000)")
    p.add_argument("--projection-steps", type=_positive_int, default=300,
                   help="Adam steps of each projection argmin ||g(z) - x|| (default 300)")
    _job_options(p)

    p = _command(sub, "transfer-matrix", help="cross-technique transferability (Papernot et al. 2016): DNN, LR, SVMs, "
                                              "tree, forest, k-NN, ensemble",
                 description="Fit each learning technique on the data's train split, let each craft adversarial "
                             "examples with its own attack (PGD on the differentiable ones, the tree attack on the "
                             "tree, HopSkipJump on the forest, PGD on a soft k-NN surrogate), project them into one "
                             "ε-ball, and show them to every technique; writes a table, CSV, JSON, heatmap and page.")
    p.add_argument("--data", default="digits", metavar="NAME", help="dataset (default digits)")
    p.add_argument("--data-dir", metavar="DIR", help="directory holding the dataset files")
    p.add_argument("--download", action="store_true", help="download the dataset if it is not found locally")
    p.add_argument("--learners", type=_name_list, metavar="A,B,..",
                   help="techniques (default all: dnn,lr,svm,rbf_svm,tree,forest,knn,ensemble)")
    p.add_argument("--eps", type=float, default=0.2, help="the budget every example is projected into (default 0.2)")
    _norm_option(p, default="linf", help="linf or l2 (default linf)")
    p.add_argument("--steps", type=_positive_int, default=20, help="PGD iterations (default 20)")
    p.add_argument("--budget", type=_positive_int, default=1000, help="HopSkipJump queries per point (default 1000)")
    p.add_argument("--limit", type=_positive_int, help="training points to fit on (default all)")
    p.add_argument("--n", type=_positive_int, default=500, help="test points (default 500)")
    p.add_argument("--seed", type=_seed, default=0)
    p.add_argument("--out", required=True, metavar="DIR")

    p = _command(sub, "run", help="run an experiment spec (TOML) into a results store",
                 description="Expand a TOML spec (models x data x attacks x eps x defenses x seeds) into cells, "
                             "run those not already done in the store, and store each cell's metrics and "
                             "per-point outcomes (SQLite). Re-running resumes; failed cells are retried.")
    p.add_argument("spec", metavar="SPEC.toml")
    p.add_argument("--store", default="runs.db", metavar="FILE", help="the results store (default runs.db)")
    p.add_argument("--dry-run", action="store_true", help="list the cells and which are done; run nothing")
    p.add_argument("--executor", choices=["local", "ray", "torchrun"],
                   help="local (default), ray, or torchrun (the default when started by torchrun "
                        "--nproc-per-node K -m advlab run ...: robust cells are sharded over the ranks)")
    p.add_argument("--address", metavar="ADDR", help="ray: an existing cluster (default: start a local one)")
    p.add_argument("--cpus-per-cell", type=float, default=1.0, help="ray: CPUs per cell task (default 1)")
    p.add_argument("--gpus-per-cell", type=float, default=0.0, help="ray: GPUs per cell task (default 0)")
    p.add_argument("--threads", type=_positive_int,
                   help="torch threads per cell (default: torch's own locally, --cpus-per-cell on Ray); the same "
                        "value gives bit-identical rows on either executor")
    p.add_argument("--device", default="cpu", metavar="DEVICE", help="cpu, cuda, cuda:N, mps or auto")
    p.add_argument("--data-dir", metavar="DIR", help="directory holding the dataset files")
    p.add_argument("--mlflow", metavar="URI",
                   help="also log each cell to MLflow (file:///path/mlruns or http://host:5000; needs "
                        "pip install 'advlab[mlflow]')")
    p.add_argument("--mlflow-experiment", metavar="NAME", help="the MLflow experiment (default: the spec's name)")
    p.add_argument("--no-progress", action="store_true")

    p = _command(sub, "reproduce", help="reproduce the seeds' claims: specs run into a store, one report",
                 description="Run the built-in specs of the seed documents' 21 claims (MI-FGSM's transfer, "
                             "decay and iterations, ensembles, the eps list, adversarial training, distillation, "
                             "detectors, universal perturbations and patches, substitutes, transfer across "
                             "learning techniques, Fawzi et al.'s bounds, noise and the adversarial subspace, VAT, "
                             "RBF networks, targeted attacks, the panda figure) through the runs layer into one "
                             "store, judge each claim from the stored rows (the statistical test named) and write "
                             "one HTML page. Resumable: cells already in the store are reused.")
    p.add_argument("claims", nargs="*", metavar="CLAIM", help="claim keys or numbers (default: all); "
                   "`advlab reproduce --list` names them")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", dest="mode", action="store_const", const="quick",
                      help="the default: 500 test points, models trained 3 epochs (minutes on 2 cores)")
    size.add_argument("--full", dest="mode", action="store_const", const="full",
                      help="the whole test set, 10 epochs, 3 seeds (hours; resumable)")
    size.add_argument("--tiny", dest="mode", action="store_const", const="tiny",
                      help="digits, 40 points (a smoke test)")
    p.add_argument("--list", action="store_true", help="list the claims and exit")
    p.add_argument("--no-run", action="store_true",
                   help="run nothing: judge the claims from the cells already in the store and write the page "
                        "(a claim with cells missing says 'not run'); for a --full run done claim by claim")
    p.add_argument("--store", default="reproduce.db", metavar="FILE", help="the results store (default reproduce.db)")
    p.add_argument("--out", default="reproduce", metavar="DIR", help="the report folder (default reproduce)")
    p.add_argument("--executor", choices=["local", "ray"], default="local", help="local (default) or ray")
    p.add_argument("--address", metavar="ADDR", help="ray: an existing cluster (default: start a local one)")
    p.add_argument("--threads", type=_positive_int, help="torch threads per cell")
    p.add_argument("--workers", type=_positive_int, default=None, metavar="N",
                   help="local: N processes share out the cells on the store, one torch thread each on 2 "
                        "cores (default 2 where the CPU has 2 cores or more and the local executor runs on it, "
                        "otherwise 1)")
    p.add_argument("--no-judge", action="store_true", help=argparse.SUPPRESS)  # what an extra worker runs
    p.add_argument("--device", default="cpu", metavar="DEVICE", help="cpu, cuda, cuda:N, mps or auto")
    p.add_argument("--data-dir", metavar="DIR", help="directory holding the dataset files")
    p.add_argument("--no-progress", action="store_true")

    for name, text in (("results", "tables from the store: robust accuracy per attack and the worst case per point"),
                       ("leaderboard", "models ranked per dataset and threat by their worst-case robust accuracy")):
        p = _command(sub, name, help=text, description=text[:1].upper() + text[1:] + ", over every run stored.")
        p.add_argument("--store", default="runs.db", metavar="FILE")
        p.add_argument("--model", metavar="NAME", help="only this model (its name in the spec)")
        p.add_argument("--dataset", metavar="NAME")
        p.add_argument("--norm", choices=["linf", "l2", "l1"])
        p.add_argument("--threat", choices=["white-box", "black-box", "transfer"],
                       help="only cells of this threat model (the worst case then counts only their attacks)")
        if name == "results":
            p.add_argument("--attack", metavar="NAME", help="only this attack's rows (the worst case keeps all)")
            p.add_argument("--run", type=_positive_int, metavar="ID", help="only cells last run by this run")
        p.add_argument("--format", choices=["md", "csv", "json"], default="md")

    p = _command(sub, "report", help="one static HTML report from the results store",
                 description="Render one static HTML page (no server, no network; figures beside it) from the "
                             "store's rows only: leaderboard, robust accuracy per model and attack with curves, "
                             "the worst case per point, minimal-norm distributions, transfer heatmaps, failed "
                             "cells and provenance.")
    p.add_argument("--store", default="runs.db", metavar="FILE")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--title", help="page title (default names the store)")

    _command(sub, "list", help="list architectures, datasets and attacks")
    return parser


def _run(args: argparse.Namespace) -> int:
    from advlab import runs

    if args.command == "demo":
        quick = {"train_limit": 2000, "n": min(args.n, 200)} if args.quick else {"n": args.n}
        runs.demo_job(out=args.out, epochs=args.epochs, seed=args.seed, data=args.data, data_dir=args.data_dir,
                      progress=not args.no_progress, quick=args.quick, **quick)
    elif args.command == "train":
        runs.train_job(data=args.data, model=args.model, out=args.out, epochs=args.epochs, seed=args.seed,
                       batch_size=args.batch_size, lr=args.lr, data_dir=args.data_dir,
                       download=args.download, limit=args.limit, progress=not args.no_progress,
                       overwrite=args.overwrite)
    elif args.command == "attack" and args.attack.strip().lower() in ("uap", "patch"):
        from advlab.runs.universal import universal_job

        universal_job(checkpoint=_source(args), device=args.device, kind=args.attack.strip().lower(), out=args.out, eps=args.eps,
                      norm=args.norm, method=args.method, epochs=args.passes, target_class=args.target_class,
                      patch_size=args.patch_size, fit_n=args.fit_n, n=args.n, seed=args.seed, data=args.data,
                      data_dir=args.data_dir, download=args.download)
    elif args.command == "attack":
        runs.attack_job(checkpoint=_source(args), device=args.device, attack=args.attack, eps=args.eps, out=args.out,
                        norm=args.norm, steps=args.steps, step_size=args.step_size, targeted=args.targeted,
                        budget=args.budget, source=args.source, progress=not args.no_progress,
                        n=args.n, batch_size=args.batch_size, seed=args.seed, data=args.data,
                        data_dir=args.data_dir, download=args.download)
    elif args.command == "evaluate":
        from advlab.runs.distributed import join, launched_by_torchrun, leave

        if launched_by_torchrun() and args.strong:
            raise ValueError("evaluate --strong is not sharded (its cascade resumes from one record per ε): "
                             "run it without torchrun, or shard a spec's robust cells with advlab run")
        ranks = join(args.device)  # under torchrun: this rank; otherwise one rank, the writer
        try:
            runs.evaluate_job(checkpoint=_source(args), device=ranks.device, out=args.out, attacks=args.attacks,
                              eps=args.eps, norm=args.norm, steps=args.steps, step_size=args.step_size, n=args.n,
                              batch_size=args.batch_size, seed=args.seed, data=args.data,
                              data_dir=args.data_dir, download=args.download,
                              progress=not args.no_progress and ranks.writer, strong=args.strong,
                              strong_version=args.strong_version,
                              sharded=ranks.sharded, writer=ranks.writer)
        finally:
            if launched_by_torchrun():
                leave(synchronise=sys.exc_info()[0] is None)
    elif args.command == "measure":
        runs.measure_job(checkpoint=_source(args), device=args.device, out=args.out, attacks=args.attacks, norm=args.norm,
                         eps=args.eps, steps=args.steps, n=args.n, batch_size=args.batch_size, data=args.data,
                         data_dir=args.data_dir, download=args.download, progress=not args.no_progress)
    elif args.command == "defend":
        from advlab.runs.defend import defend_job
        defend_job(recipe=args.recipe, out=args.out, data=args.data, model=args.model, epochs=args.epochs,
                   eps=args.eps, seed=args.seed, limit=args.limit, n=args.n, batch_size=args.batch_size,
                   lr=args.lr, lr_schedule=args.lr_schedule, steps=args.steps, alpha=args.alpha, beta=args.beta,
                   temperature=args.temperature,
                   vat_eps=args.vat_eps, sigma=args.sigma, labels=args.labels, static=args.static, baseline=args.baseline,
                   surrogate=args.surrogate, eval_eps=args.eval_eps, budget=args.budget,
                   data_dir=args.data_dir, download=args.download, progress=not args.no_progress)
    elif args.command == "transfer-matrix":
        from advlab.runs.techniques import transfer_matrix_job
        transfer_matrix_job(data=args.data, out=args.out, learners=args.learners, eps=args.eps, norm=args.norm,
                            n=args.n, steps=args.steps, budget=args.budget, limit=args.limit, seed=args.seed,
                            data_dir=args.data_dir, download=args.download)
    elif args.command == "fooling":
        from advlab.runs.fooling import fooling_job
        fooling_job(checkpoint=_source(args), device=args.device, out=args.out, level=args.level,
                    per_class=args.per_class, steps=args.steps, noise_n=args.noise_n, seed=args.seed, data=args.data,
                    data_dir=args.data_dir, download=args.download)
    elif args.command == "certify":
        from advlab.runs.certify import certify_job
        certify_job(checkpoint=_source(args), device=args.device, out=args.out, method=args.method, radii=args.radii,
                    sigma=args.sigma, samples=args.samples, alpha=args.alpha, n=args.n, batch_size=args.batch_size,
                    seed=args.seed, pgd_steps=args.pgd_steps, data=args.data, data_dir=args.data_dir,
                    download=args.download)
    elif args.command == "audit":
        report = runs.audit_job(checkpoint=_source(args), device=args.device, eps=args.eps, out=args.out, norm=args.norm,
                                n=args.n, steps=args.steps, seed=args.seed, data=args.data,
                                data_dir=args.data_dir, download=args.download)
        return 0 if report.passed else 1
    elif args.command == "geometry":
        runs.geometry_job(checkpoint=_source(args), device=args.device, out=args.out, n_maps=args.n_maps, extent=args.extent,
                          resolution=args.resolution, gaas_eps=args.gaas_eps, max_directions=args.max_directions,
                          n_gaas=args.n_gaas, eps=args.eps, steps=args.steps, n=args.n, clip=args.clip,
                          seed=args.seed, data=args.data, data_dir=args.data_dir, download=args.download,
                          progress=not args.no_progress)
    elif args.command == "bounds":
        checkpoints = {}
        for item in args.checkpoint:
            name, sep, path = item.partition("=")
            if not sep or not name or not path:
                raise ValueError(f"--checkpoint takes NAME=DIR, got {item!r}")
            checkpoints[name] = path
        runs.bounds_job(checkpoints=checkpoints, out=args.out, data=args.data, vae=args.vae,
                        latent_dim=args.latent_dim, vae_epochs=args.vae_epochs, n=args.n, seed=args.seed,
                        lipschitz_samples=args.lipschitz_samples, data_dir=args.data_dir,
                        download=args.download, progress=not args.no_progress,
                        projected_n=args.projected, transfer=args.transfer,
                        query_budget=args.query_budget, projection_steps=args.projection_steps)
    elif args.command == "run":
        return _run_spec(args)
    elif args.command == "reproduce":
        from advlab.reproduce import CLAIMS, reproduce

        if args.list:
            for c in CLAIMS.values():
                print(f"{c.number:3d}  {c.key:16s} seed {c.seed}  {c.title}")
            return 0
        workers = args.workers
        if workers is None:  # two one-thread processes: the quick run in 11 min 13 s on 2 cores, 15 min 25 s in one
            workers = 2 if ((os.cpu_count() or 1) >= 2 and args.executor == "local" and not args.no_run
                            and not args.no_judge and args.device == "cpu") else 1
        page = reproduce(args.claims or None, mode=args.mode or "quick", store=args.store, out=args.out,
                         executor=args.executor, address=args.address, data_dir=args.data_dir, device=args.device,
                         progress=not args.no_progress, threads=args.threads, run=not args.no_run,
                         workers=workers, judge=not args.no_judge)
        if not args.no_judge:
            print(f"report written to {page}")
    elif args.command in ("results", "leaderboard"):
        from advlab.runs.results import BOARD_COLUMNS, leaderboard, render, results_text
        from advlab.runs.store import Store

        if not os.path.exists(args.store):
            raise FileNotFoundError(f"no store at {args.store}; run a spec first: advlab run SPEC.toml --store "
                                    f"{args.store}")
        filters = {"model": args.model, "dataset": args.dataset, "norm": args.norm, "threat": args.threat}
        with Store(args.store) as store:
            if args.command == "results":
                print(results_text(store, fmt=args.format, attack=args.attack, run=args.run, **filters), end="")
            else:
                print(render(leaderboard(store, **filters), BOARD_COLUMNS, args.format,
                             title="Leaderboard: worst case over every stored attack",
                             note="Robust accuracy over n points under the worst case per point of every attack "
                                  "stored for the model at that threat (the attacks column)."), end="")
    elif args.command == "report":
        from advlab.reports.store import store_report
        from advlab.runs.store import Store

        if not os.path.exists(args.store):
            raise FileNotFoundError(f"no store at {args.store}; run a spec first: advlab run SPEC.toml --store "
                                    f"{args.store}")
        with Store(args.store) as store:
            page = store_report(store, args.out, title=args.title)
        print(f"report written to {page}")
    elif args.command == "list":
        from advlab.attacks.registry import BLACKBOX, known_names, spelling
        from advlab.data import available_datasets
        from advlab.models import list_architectures

        print("architectures:", ", ".join(list_architectures()))
        print("datasets:     ", ", ".join(available_datasets()), "(plus npz:PATH, csv:PATH, folder:PATH)")
        from advlab.attacks.registry import ATTACKS, list_attacks

        bounded = list_attacks(access="gradients", kind="bounded")
        sparse = [k for k in bounded if getattr(ATTACKS[k].cls, "norm", None) == "l0"]
        print("attacks:      ", ", ".join(spelling(k) for k in bounded if k not in sparse))
        print("  sparse (L0):", ", ".join(spelling(k) for k in sparse), "(--eps counts changed features)")
        print("  minimal:    ", known_names(access="gradients", kind="minimal"), "(no --eps)")
        print("  black-box:  ", ", ".join(spelling(k) for k in BLACKBOX), "(--budget)")
        print(f"  universal:   {UNIVERSAL} (fitted on training images, measured held-out)")
        print("recipes:       standard, fgsm-mix, pgd, fast, trades, ensemble, distill, vat, ibp, gaussian "
              "(advlab defend)")
    return 0


def _run_spec(args: argparse.Namespace) -> int:
    from advlab.runs.grid import run_spec
    from advlab.runs.spec import describe_cells, load_spec
    from advlab.runs.store import Store

    from advlab.runs.distributed import join, launched_by_torchrun, leave

    spec = load_spec(args.spec)            # every key checked before anything runs or is stored
    under_torchrun = launched_by_torchrun()
    executor = args.executor or ("torchrun" if under_torchrun else "local")
    if under_torchrun != (executor == "torchrun"):
        raise ValueError("--executor torchrun and starting the command with torchrun go together: "
                         + ("torchrun --nproc-per-node K -m advlab run SPEC.toml" if not under_torchrun else
                            f"this process was started by torchrun; drop --executor {executor}"))
    writer = join(args.device).writer if under_torchrun else True
    if args.dry_run:
        if writer:
            done = Store(args.store).done() if os.path.exists(args.store) else set()
            print(describe_cells(spec.cells, done))
            todo = sum(c.hash not in done for c in spec.cells)
            print(f"{len(spec.cells)} cells, {len(spec.cells) - todo} done, {todo} to run")
        if under_torchrun:
            leave()
        return 0
    tracker = None
    if args.mlflow and writer:  # made before anything runs: a missing extra or bad URI fails first
        from advlab.runs.tracking import MlflowTracker

        tracker = MlflowTracker(args.mlflow, experiment=args.mlflow_experiment or spec.name)
    elif args.mlflow_experiment and not args.mlflow:
        raise ValueError("--mlflow-experiment needs --mlflow URI")
    try:
        if writer:
            with Store(args.store) as store:
                summary = run_spec(spec, store, executor=executor, address=args.address, data_dir=args.data_dir,
                                   device=args.device, progress=not args.no_progress,
                                   cpus_per_cell=args.cpus_per_cell, gpus_per_cell=args.gpus_per_cell,
                                   threads=args.threads, tracker=tracker)
        else:
            summary = run_spec(spec, None, executor=executor, data_dir=args.data_dir, device=args.device,
                               progress=False, threads=args.threads)
    finally:
        if under_torchrun:
            leave(synchronise=sys.exc_info()[0] is None)
    if not writer:
        return 1 if summary.failed else 0
    print(summary.text())
    if tracker is not None:
        print(f"mlflow: {len(summary.done) + len(summary.failed) - tracker.failures} cell(s) logged to "
              f"{args.mlflow} (experiment {args.mlflow_experiment or spec.name})"
              + (f"; {tracker.failures} could not be logged (see the warnings)" if tracker.failures else ""))
    for h, err in summary.failed.items():
        print(f"  failed {h}: {err}", file=sys.stderr)
    return 1 if summary.failed else 0


def _rank_tag() -> str:
    """`` (rank 1/2)`` under torchrun (every rank reports its own error), else empty."""
    if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1 and "RANK" in os.environ:
        return f" (rank {os.environ['RANK']}/{os.environ['WORLD_SIZE']})"
    return ""


def main(argv: Sequence[str] | None = None) -> int:
    # On a shared machine OpenMP's spinning workers stall torch when another process holds a core
    # (fixed-budget PGD fell to 1.14x torchattacks with one CPU-bound neighbour). Passive waiting
    # costs nothing on an idle machine. Set before torch is imported; a user's setting wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.debug:
        return _run(args)
    shown = warnings.showwarning

    def show(message: Any, category: type[Warning], filename: str, lineno: int, file: Any = None,
             line: str | None = None) -> None:
        # advlab's own warnings are for the user of the command: one line, no source location
        # (which would be runpy's or the shell's, not theirs)
        from advlab._checks import AdvlabWarning

        if issubclass(category, AdvlabWarning):
            print(f"advlab {args.command}{_rank_tag()}: warning: {message}", file=file or sys.stderr)
        else:
            shown(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    try:
        return _run(args)
    except KeyboardInterrupt:
        print("advlab: interrupted", file=sys.stderr)
        return 130
    except (ValueError, TypeError, FileNotFoundError, FileExistsError, NotADirectoryError,
            KeyError, OSError, FloatingPointError, zipfile.BadZipFile) as err:
        # (a KeyError's str is its repr, quoted; other messages may end in a quoted value)
        message = (str(err).strip("'\"") if isinstance(err, KeyError) else str(err)) or type(err).__name__
        print(f"advlab {args.command}{_rank_tag()}: error: {message}", file=sys.stderr)
        print("(run again with --debug for the full traceback)", file=sys.stderr)
        return 2
    except RecursionError:
        print(f"advlab {args.command}: error: an input is nested too deeply to read (a hostile or corrupt "
              "file?)", file=sys.stderr)
        return 2
    except Exception as err:  # anything else is advlab's bug or a library's: one line, not a traceback
        print(f"advlab {args.command}: error: {type(err).__name__}: {str(err).strip() or 'no message'}",
              file=sys.stderr)
        print("(this looks like a bug; run again with --debug for the full traceback and please report "
              "it)", file=sys.stderr)
        return 1
    finally:
        warnings.showwarning = shown


if __name__ == "__main__":
    sys.exit(main())
