"""Randomized smoothing beside the reference procedure of Cohen, Rosenfeld & Kolter (2019)
(issue #13): certified accuracy at L2 radius 0.25 and 0.5, abstentions, and time per point, on
the same Fashion-MNIST points and the same noise-trained base classifier.

* advlab ``SmoothedClassifier(sigma, n0=100, n=1000, alpha=0.001).certify``: all points' noise
  samples in batches of ``batch_size`` forward passes;
* the reference: Cohen et al.'s CERTIFY written as their code runs it, one point at a time
  (``n0`` selection samples, then ``n`` estimation samples in noise batches of 1,000, the
  one-sided Clopper-Pearson bound, ``R = σ Φ⁻¹(p_A)``, abstain when ``p_A ≤ 1/2``).

The two draw different noise, so their per-point radii differ by Monte-Carlo error alone: the
certified accuracies must agree within it (the table gives the count of points on which they
differ). Cohen et al.'s own tables are for CIFAR-10 and ImageNet and are not comparable with a
28×28 model; this bench compares the procedure, not the paper's numbers.

    .venv/bin/python bench/bench_smoothing.py          # about 4 minutes on 2 cores

Writes bench/results/smoothing.json and bench/SMOOTHING.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def noise_model(sigma: float, epochs: int, cache: Path):
    """A small CNN trained under N(0, σ²) noise (advlab's GaussianNoise recipe), cached."""
    from advlab.data import load_dataset
    from advlab.defenses import GaussianNoise, train
    from advlab.models import accuracy, build_seeded, load, save

    ckpt = cache / f"small-cnn-fashion-mnist-gaussian{sigma:g}-e{epochs}"
    if ckpt.exists():
        return load(ckpt)
    tr = load_dataset("fashion-mnist", split="train")
    te = load_dataset("fashion-mnist", split="test")
    model = build_seeded("small-cnn", in_shape=tr.input_shape, num_classes=tr.num_classes, seed=0)
    train(model, GaussianNoise(sigma=sigma), tr.x, tr.y, epochs=epochs, batch_size=128, lr=1e-3, seed=0,
          progress=False)
    model.eval()
    save(model, ckpt, overwrite=True, card={"dataset": "fashion-mnist", "seed": 0,
                                            "clean_accuracy": accuracy(model, te.x, te.y),
                                            "training": {"recipe": f"gaussian sigma={sigma:g}", "epochs": epochs}})
    return load(ckpt)


def reference_certify(model, x: torch.Tensor, *, sigma: float, n0: int, n: int, alpha: float,
                      batch: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Cohen et al.'s CERTIFY, point by point as their reference code runs it: (pred, radius)."""
    from scipy.stats import beta, norm

    preds, radii = [], []
    classes = None
    for xi in x:
        def counts(num: int) -> torch.Tensor:
            nonlocal classes
            c = None
            left = num
            with torch.no_grad():
                while left > 0:
                    b = min(batch, left)
                    left -= b
                    xb = xi.unsqueeze(0).repeat(b, *([1] * xi.dim()))
                    logits = model(xb + sigma * torch.randn(xb.shape, generator=generator))
                    classes = logits.shape[1]
                    got = torch.bincount(logits.argmax(1), minlength=classes)
                    c = got if c is None else c + got
            return c
        guess = int(counts(n0).argmax())
        k = int(counts(n)[guess])
        p_lower = beta.ppf(alpha, k, n - k + 1) if k > 0 else 0.0
        if p_lower < 0.5:
            preds.append(-1)
            radii.append(0.0)
        else:
            preds.append(guess)
            radii.append(sigma * float(norm.ppf(p_lower)))
    return torch.tensor(preds), torch.tensor(radii, dtype=torch.float64)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--points", type=int, default=200)
    p.add_argument("--sigma", type=float, default=0.25)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()

    from _common import git_revision, versions
    from advlab.certify import SmoothedClassifier
    from advlab.data import load_dataset

    torch.set_num_threads(2)
    model = noise_model(args.sigma, args.epochs, HERE / "results")
    test = load_dataset("fashion-mnist", split="test").subset(args.points)
    x, y = test.x, test.y
    smoothed = SmoothedClassifier(sigma=args.sigma, n0=100, n=1000, alpha=0.001, batch_size=1000)
    times: dict[str, list[float]] = {"advlab": [], "reference": []}
    result: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for r in range(args.rounds):                       # A B A B
        t0 = time.perf_counter()
        cert = smoothed.certify(model, x, generator=torch.Generator().manual_seed(r))
        times["advlab"].append(time.perf_counter() - t0)
        result["advlab"] = (cert.pred, cert.radius)
        t0 = time.perf_counter()
        result["reference"] = reference_certify(model, x, sigma=args.sigma, n0=100, n=1000, alpha=0.001,
                                                batch=1000, generator=torch.Generator().manual_seed(100 + r))
        times["reference"].append(time.perf_counter() - t0)
    rows = {}
    for name, (pred, radius) in result.items():
        ok = pred == y
        rows[name] = {f"certified_at_{r:g}": float((ok & (radius >= r)).float().mean()) for r in (0.0, 0.25, 0.5)}
        rows[name].update(abstained=int((pred < 0).sum()),
                          ms_per_point=1000 * statistics.median(times[name]) / len(y))
    (pa, ra), (pb, rb) = result["advlab"], result["reference"]
    differ = {f"{r:g}": int(((pa == y) & (ra >= r) != ((pb == y) & (rb >= r))).sum()) for r in (0.25, 0.5)}
    ratio = statistics.median(b / a for a, b in zip(times["advlab"], times["reference"]))
    out = {"points": len(y), "sigma": args.sigma, "n0": 100, "n": 1000, "alpha": 0.001, "rows": rows,
           "points_that_differ": differ, "time_ratio_reference_over_advlab": ratio,
           "versions": versions(("torch", "advlab", "scipy")), "revision": git_revision()}
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "smoothing.json").write_text(json.dumps(out, indent=2))
    lines = ["# Randomized smoothing beside Cohen et al.'s reference procedure", "",
             f"`.venv/bin/python bench/bench_smoothing.py {' '.join(sys.argv[1:])}`".replace(" `", "`")
             + f" at {out['revision']}: Fashion-MNIST small CNN trained {args.epochs} epochs under "
             f"N(0, {args.sigma:g}²) noise, the first {len(y)} test points, n0 = 100, n = 1,000, α = 0.001, "
             f"{args.rounds} interleaved rounds (each with fresh noise).", "",
             "| procedure | certified acc. r=0 | r=0.25 | r=0.5 | abstained | ms per point |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {100 * r['certified_at_0']:.1f}% | {100 * r['certified_at_0.25']:.1f}% | "
                     f"{100 * r['certified_at_0.5']:.1f}% | {r['abstained']} | {r['ms_per_point']:.1f} |")
    lines += ["", f"Points certified by one and not the other (Monte-Carlo noise): {differ['0.25']} at r = 0.25, "
              f"{differ['0.5']} at r = 0.5, of {len(y)}.", "",
              f"Time, reference ÷ advlab (median of per-round ratios): {ratio:.2f}×", ""]
    (HERE / "SMOOTHING.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
