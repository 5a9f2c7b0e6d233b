"""Input optimisation toward a goal on a regressor, and who believes the result (issue #14 item 7).

The lecture's car-blueprint example: a model predicts how fast a design is; optimise the design
until the model believes it is fast. Here the model is an MLP regressor fitted on scikit-learn's
bundled diabetes data (442 patients, 10 baseline measurements, target: disease progression one
year later, standardised), and the "design" is a patient's features, pushed "up" by
:class:`advlab.attacks.RegressionPGD` (L∞, 50 steps) within ε of each test point.

Per ε:

* the believed gain: mean ``f(x') − f(x)`` over the 111 test points, in target standard
  deviations and in raw units;
* the same against random directions of the same norm (:func:`advlab.attacks.noise_gain`, 32
  draws per point): attack gain ÷ mean ``|noise change|``;
* THE LESSON: the optimised inputs checked by independent judges fitted on the same training
  data: a k-NN regressor (k = 10), ridge regression, and the same MLP trained from another seed.
  ``credited = mean judge(x') − judge(x) ÷ mean f(x') − f(x)``: the fraction of the model's
  believed gain a judge agrees with. 1 would mean the optimiser found better inputs; far below 1
  means it found inputs the model alone is wrong about (adversarial examples of the regressor).

Run twice: on the 10 real features, and on a 100-feature variant (the 10 plus 90 uniform noise
columns the target does not depend on, ``noise_features=90``) where the model has more to
overfit and the optimiser more to exploit; there a k-NN judge on the 10 real features alone is
added. Also: the mean raw change of each feature at one ε (what the "better design" is), and how
many optimised points have a ``sex`` code no patient has.

One thread, one run, seeds fixed. Run: ``PYTHONPATH=src python bench/bench_regression.py`` (under
a minute on a shared 2-core CPU). Writes ``bench/results/regression.json`` and ``.md``.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # before numpy/torch load
    os.environ.setdefault(_var, "1")

import argparse
import json
import logging
import platform
import time
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor, nn

from _common import HERE, git_revision, start, versions
from advlab.attacks import RegressionPGD, noise_gain
from advlab.data import RegressionData, load_diabetes_regression

log = logging.getLogger("bench_regression")

EPS = (0.02, 0.05, 0.1, 0.2)
FEATURE_EPS = 0.1  # the ε of the per-feature table
STEPS = 50
NOISE_TRIALS = 32
K = 10


WIDTH = 32
VALIDATION = 80  # training points held out to pick each MLP's stopping step
EVERY = 25


def mlp(d: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, WIDTH), nn.ReLU(), nn.Linear(WIDTH, WIDTH), nn.ReLU(),
                         nn.Linear(WIDTH, 1))


WEIGHT_DECAYS = (1e-2, 1e-1, 1.0)


def fit_mlp(data: RegressionData, seed: int, *, epochs: int, lr: float = 3e-3) -> tuple[nn.Module, dict[str, Any]]:
    """Full-batch AdamW on the mean squared error, with model selection on held-out training
    points: ``VALIDATION`` of them (a fixed draw) are set aside, and for each weight decay in
    ``WEIGHT_DECAYS`` the weights of the best validation R² (checked every ``EVERY`` steps, at most
    ``epochs``) are kept; the best of those is returned with its weight decay, step and
    validation R². The test split is never looked at. On 331 points the MLP overfits within a
    few hundred steps (1,500 steps unstopped: train R² 0.89, test R² −0.04 on the 10 features)."""
    perm = torch.from_numpy(np.random.RandomState(5).permutation(data.x_train.shape[0]))
    va, tr = perm[:VALIDATION], perm[VALIDATION:]
    x, y = data.x_train[tr], data.y_train[tr]
    xv, yv = data.x_train[va], data.y_train[va].numpy()
    best: tuple[float, dict[str, Any], dict[str, Tensor]] | None = None
    for wd in WEIGHT_DECAYS:
        model = mlp(data.num_features, seed)
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=wd)
        for step in range(1, epochs + 1):
            opt.zero_grad()
            loss = ((model(x)[:, 0] - y) ** 2).mean()
            loss.backward()
            opt.step()
            if step % EVERY == 0:
                score = r2(torch_judge(model)(xv), yv)
                if best is None or score > best[0]:
                    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                    best = (score, dict(weight_decay=wd, step=step, validation_r2=score), state)
    assert best is not None
    model = mlp(data.num_features, seed)
    model.load_state_dict(best[2])
    return model.eval(), best[1]


def r2(pred: np.ndarray, y: np.ndarray) -> float:
    return float(1 - ((pred - y) ** 2).sum() / ((y - y.mean()) ** 2).sum())


def torch_judge(model: nn.Module) -> Callable[[Tensor], np.ndarray]:
    def judge(x: Tensor) -> np.ndarray:
        with torch.no_grad():
            return model(x)[:, 0].numpy()
    return judge


def sklearn_judge(est: Any, columns: slice = slice(None)) -> Callable[[Tensor], np.ndarray]:
    return lambda x: est.predict(x.numpy()[:, columns])


def judges_for(data: RegressionData, *, epochs: int, real_only: bool) -> dict[str, Callable[[Tensor], np.ndarray]]:
    from sklearn.linear_model import Ridge
    from sklearn.neighbors import KNeighborsRegressor

    xt, yt = data.x_train.numpy(), data.y_train.numpy()
    out = {
        f"k-NN (k={K})": sklearn_judge(KNeighborsRegressor(n_neighbors=K).fit(xt, yt)),
        "ridge": sklearn_judge(Ridge(alpha=0.1).fit(xt, yt)),
        "MLP, seed 1": torch_judge(fit_mlp(data, 1, epochs=epochs)[0]),
    }
    if real_only:
        real = slice(0, 10)
        out[f"k-NN (k={K}), 10 real features"] = sklearn_judge(
            KNeighborsRegressor(n_neighbors=K).fit(xt[:, real], yt), real)
    return out


def study(data: RegressionData, *, epochs: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    model, stopped = fit_mlp(data, 0, epochs=epochs)
    judges = judges_for(data, epochs=epochs, real_only=data.num_features > 10)
    x, y = data.x_test, data.y_test.numpy()
    quality = {"MLP, seed 0 (the model)": r2(torch_judge(model)(x), y)}
    quality.update({name: r2(j(x), y) for name, j in judges.items()})
    quality_train = {"MLP, seed 0 (the model)": r2(torch_judge(model)(data.x_train), data.y_train.numpy())}
    log.info("%s: test R² %s", data.num_features, quality)
    rows = []
    features: dict[str, float] = {}
    for eps in EPS:
        res = RegressionPGD(eps=eps, norm="linf", goal="up", steps=STEPS)(model, x)
        noise = noise_gain(model, x, res, trials=NOISE_TRIALS, generator=torch.Generator().manual_seed(1))
        believed = float(res.gain.mean())
        credited = {}
        for name, judge in judges.items():
            credited[name] = float((judge(res.x_adv) - judge(x)).mean()) / believed
        raw = data.to_raw_features(res.x_adv) - data.to_raw_features(x)
        sex_codes = res.x_adv[:, 1]
        odd_sex = int(((sex_codes > 1e-6) & (sex_codes < 1 - 1e-6)).sum())
        noise_share = None
        if data.num_features > 10:
            # known only here: the target does not depend on columns 10.., so the part of the
            # believed gain that moving them alone produces is gain the model invented
            only_noise = x.clone()
            only_noise[:, 10:] = res.x_adv[:, 10:]
            with torch.no_grad():
                noise_share = float((model(only_noise)[:, 0] - res.y_before).mean()) / believed
        rows.append(dict(noise_share=noise_share,
            eps=eps, believed_gain=believed, believed_gain_raw=believed * data.target_std,
            gain_min=float(res.gain.min()), mean_norm=float(res.norms.mean()),
            noise_abs=float(noise.abs().mean()), noise_signed=float(noise.mean()),
            ratio_vs_noise=believed / float(noise.abs().mean()), credited=credited,
            odd_sex=odd_sex, n=int(x.shape[0])))
        if eps == FEATURE_EPS:
            features = {name: float(raw[:, i].mean()) for i, name in enumerate(data.feature_names[:10])}
        log.info("d=%d eps=%g believed %.3f, %.2fx noise, credited %s", data.num_features, eps,
                 believed, rows[-1]["ratio_vs_noise"], {k: round(v, 3) for k, v in credited.items()})
    return dict(num_features=data.num_features, selected=stopped, test_r2=quality, train_r2=quality_train, rows=rows,
                feature_change=features, target_std=data.target_std, seconds=time.perf_counter() - t0)


def render(out: dict[str, Any]) -> str:
    lines = ["# Input optimisation toward a goal on a regressor (issue #14 item 7)", "",
             f"revision {out['revision']}, {out['platform']}, torch {out['versions']['torch']}, "
             f"scikit-learn {out['sklearn']}; {STEPS}-step L∞ RegressionPGD, goal \"up\", on the "
             f"{out['studies'][0]['rows'][0]['n']} test points; noise: {NOISE_TRIALS} random directions "
             "of the attack's norm per point.", ""]
    for s in out["studies"]:
        d = s["num_features"]
        title = "10 real features" if d == 10 else f"{d} features (10 real + {d - 10} uniform noise)"
        sel = s["selected"]
        lines += [f"## {title}", "", f"The model: weight decay {sel['weight_decay']:g}, stopped at step "
                  f"{sel['step']} (validation R² {sel['validation_r2']:.3f}, train R² "
                  f"{s['train_r2']['MLP, seed 0 (the model)']:.3f}). Test R²: "
                  + ", ".join(f"{k} {v:.3f}" for k, v in s["test_r2"].items()), ""]
        names = list(s["rows"][0]["credited"])
        share = s["rows"][0]["noise_share"] is not None
        lines += ["| ε (L∞) | believed gain (σ) | raw units | min gain | noise \\|Δf\\| | gain ÷ noise | "
                  + " | ".join(f"credited by {n}" for n in names)
                  + (" | from the noise columns alone" if share else "") + " | sex code off {0,1} |",
                  "|---" * (7 + len(names) + share) + "|"]
        for r in s["rows"]:
            lines.append(f"| {r['eps']:g} | {r['believed_gain']:.3f} | {r['believed_gain_raw']:.1f} | "
                         f"{r['gain_min']:.3f} | {r['noise_abs']:.4f} | {r['ratio_vs_noise']:.2f}× | "
                         + " | ".join(f"{r['credited'][n]:.2f}" for n in names)
                         + (f" | {r['noise_share']:.2f}" if share else "") + f" | {r['odd_sex']}/{r['n']} |")
        if s["feature_change"]:
            lines += ["", f"Mean raw change of each real feature at ε = {FEATURE_EPS}: "
                      + ", ".join(f"{k} {v:+.3g}" for k, v in s["feature_change"].items()), ""]
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=1500, help="most full-batch AdamW steps per MLP")
    args = p.parse_args()
    start(1)
    import sklearn

    studies = [study(load_diabetes_regression(noise_features=k), epochs=args.epochs) for k in (0, 90)]
    out = dict(revision=git_revision(), platform=platform.platform(), versions=versions(("torch", "numpy")),
               sklearn=sklearn.__version__, epochs=args.epochs, eps=EPS, steps=STEPS,
               noise_trials=NOISE_TRIALS, studies=studies)
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    (results / "regression.json").write_text(json.dumps(out, indent=2))
    (results / "regression.md").write_text(render(out))
    print(render(out))


if __name__ == "__main__":
    main()
