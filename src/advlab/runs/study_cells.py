"""The ``study`` measurement kind: studies of the seeds that are not an attack grid, as cells.

``kind = "study"`` with ``study =``:

* ``"cosine"`` — the cosine similarity of successive updates of I-FGSM and MI-FGSM (Dong et al.
  2018): per attacked point, the mean over steps (outcome ``norm``), attacks ``I-FGSM`` and
  ``MI-FGSM`` (:func:`advlab.evaluation.perturbation_cosine_similarity`).
* ``"noise"`` — PGD against random noise of the same L∞ norm (every coordinate ``±ε``, then the
  box): per point, broken or not by each (attacks ``PGD`` and ``noise``); and the dimension of the
  adversarial subspace at L2 radius ``gaas_eps`` (Tramèr et al. 2017's GAAS, attack ``GAAS``, the
  estimate in ``norm``; :func:`advlab.evaluation.adversarial_subspace_dim`).
* ``"universal"`` — one universal perturbation (Moosavi-Dezfooli et al. 2017) fitted on the first
  half of the test points, shown to the second half, beside one random ``±ε`` noise vector
  (attacks ``UAP`` and ``noise``; outcomes over the held-out points).
* ``"targeted"`` — targeted PGD (random start, ``steps``) toward every class ``t`` in turn, on the
  correctly classified points of another class (attack ``target t``; success: classified ``t``).
* ``"detector"`` — SafetyNet (Lu et al. 2017) fitted on ``fit_n`` training images and their PGD
  examples; on the test points: the share of PGD and FGSM examples it flags, the clean points it
  flags, and PGD through the guarded classifier plainly and adaptively (:class:`AdaptivePGD`,
  attacking classifier and detector together); success through the guard = fooled and accepted.
* ``"patch"`` — an adversarial patch (Brown et al. 2017) toward class 0 per size in ``sizes``
  (fractions of the image area), fitted on the first half, pasted once per held-out point at a
  random placement; beside a random patch of the same size (``patch S``, ``random patch S``).
* ``"substitute"`` — Papernot et al. 2017: a substitute trained from the model's labels with
  Jacobian augmentation (``rounds`` rounds, seed set of ``seed_n`` test points); after each round,
  FGSM crafted on it and shown once to the model, on the other test points (``round r``, the
  labels spent in the outcome's ``queries``).
* ``"ensemble-training"`` — Tramèr et al. 2018: ``architecture`` trained (``epochs``, ``limit``
  training images) with ensemble adversarial training on FGSM examples of the static models
  ``models[1:-1]`` (and of itself); ``models[0]`` is the undefended model, ``models[-1]`` a
  held-out source. FGSM, I-FGSM and MI-FGSM crafted on the source are shown to both (``<attack>
  → standard`` / ``→ ens-adv``), and I-FGSM / MI-FGSM crafted on the logit ensemble of the static
  models and the source are shown to the defended model (``<attack> ensemble → ens-adv``).
* ``"vat"`` — Miyato et al. 2018: ``architecture`` trained on ``labels`` training images (balanced
  over the classes), plainly (``supervised``) and with semi-supervised VAT using the rest as
  unlabelled data (``vat``); the outcome's success is *classified correctly* on each test point.
* ``"bounds"`` — Fawzi et al. 2018: a VAE (latent ``latent_dim``, ``vae_epochs``) trained on the
  training split is the generator ``g``; at ``points`` codes ``z ~ N(0, I)`` (the same for every
  model) the latent, in-distribution and unconstrained robustness of each model
  (:func:`advlab.evaluation.theory.bounds_table`): outcomes ``latent / r_in / r_unc <model>``
  with the value in ``norm``; metrics the Lipschitz estimate and Theorem 1's median bounds. With
  ``projected_n``, Theorem 2 at the first ``projected_n`` points (``r_unc_projected / r_in_tight
  <model>``); with ``transfer_pairs = [[a, b], ...]``, Theorem 3 per pair: the smallest generated
  perturbation that changes both labels (``joint / joint_latent <a> & <b>``) and metrics ``delta``
  (their disagreement on generated data), ``f_transfers`` and ``delta_samples``.
* ``"confidence"`` — Goodfellow et al. 2015, Sec. 7: how confident the model is where it is wrong.
  Per point, the softmax confidence (max probability) and, for a model with RBF units
  (``unit_outputs``), the largest unit output ``max_k exp(logit_k)``: on the clean test points
  (``clean`` / ``clean unit``, success = misclassified), on FGSM examples at each ε (``FGSM`` /
  ``FGSM unit``, success = a clean-correct point fooled) and on as many uniform-noise images
  (``noise`` / ``noise unit``, clean_correct false); the value in ``norm``.
* ``"ensemble"`` — Dong et al.'s ensemble attack: FGSM, I-FGSM and MI-FGSM crafted white-box on
  the ensemble of every model but the last, fused in logits, predictions or loss
  (:class:`advlab.models.Ensemble`), shown to the last (the hold-out); attacks
  ``"<attack> <fusion>"``.

Every per-point number is an outcome row, so judges (and ``advlab results``) read them from the store.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch

STUDIES = ("cosine", "noise", "universal", "ensemble", "targeted", "detector", "patch", "substitute",
           "ensemble-training", "vat", "bounds", "confidence")


def _rows(label: str, eps: float, correct: torch.Tensor, success: torch.Tensor,
          value: torch.Tensor | None = None, offset: int = 0) -> list[dict[str, Any]]:
    out = []
    for i in range(int(correct.numel())):
        v = None if value is None else float(value[i])
        out.append({"attack": label, "eps": eps, "point": offset + i, "clean_correct": bool(correct[i]),
                    "success": bool(success[i]), "norm": v if v is None or v == v else None, "queries": None})
    return out


def _rate(label: str, eps: float, correct: torch.Tensor, success: torch.Tensor) -> list[dict[str, Any]]:
    n_correct = int(correct.sum())
    broken = int((success & correct).sum())
    return [{"attack": label, "eps": eps, "name": "n", "value": int(correct.numel())},
            {"attack": label, "eps": eps, "name": "n_correct", "value": n_correct},
            {"attack": label, "eps": eps, "name": "success_rate", "value": broken / n_correct if n_correct else None}]


def _noise(shape: tuple[int, ...], eps: float, gen: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    return eps * (torch.randint(0, 2, shape, generator=gen, device=like.device) * 2 - 1).to(like.dtype)


def run_study(config: Mapping[str, Any], *, files: Path, data_dir: str | None, device: str,
              progress: bool) -> tuple[list, list, dict]:
    from advlab.evaluation import clean_predictions
    from advlab.runs.cells import _test_data, open_ref, ref_bounds

    ds, x, y = _test_data(config, data_dir, device)
    shape = tuple(ds.input_shape)
    study = config["study"]
    gen = torch.Generator(device=x.device).manual_seed(int(config["seed"]))
    metrics: list[dict[str, Any]] = []
    outcomes: list[dict[str, Any]] = []
    summary: dict[str, Any] = {}
    steps = int(config.get("steps", 10))
    if study == "ensemble":
        from advlab.attacks import FGSM, IFGSM, MIFGSM, TransferAttack
        from advlab.models import Ensemble
        from advlab.oracle import Oracle

        refs = config["models"]
        members = [open_ref(r, files=files, device=device, input_shape=shape) for r in refs[:-1]]
        holdout = open_ref(refs[-1], files=files, device=device, input_shape=shape)
        correct = clean_predictions(holdout, x, y=y) == y
        idx = correct.nonzero().squeeze(1)
        for e in config["eps"]:
            makers = {"FGSM": FGSM(eps=e), "I-FGSM": IFGSM(eps=e, steps=steps),
                      "MI-FGSM": MIFGSM(eps=e, steps=steps, decay=1.0)}
            for fusion in ("logits", "predictions", "loss"):
                ens = Ensemble(members, fusion=fusion).eval()
                for name, attack in makers.items():
                    broken = torch.zeros_like(correct)
                    for i in range(0, idx.numel(), int(config["batch_size"])):
                        b = idx[i:i + int(config["batch_size"])]
                        r = TransferAttack(attack=attack, source=ens)(Oracle(holdout, output="label"), x[b], y[b],
                                                                      generator=gen)
                        broken[b] = r.target.success.to(broken.device)
                    label = f"{name} {fusion}"
                    outcomes += _rows(label, e, correct.cpu(), broken.cpu())
                    metrics += _rate(label, e, correct.cpu(), broken.cpu())
                    summary[f"{label} {e:g}"] = float(broken[correct].float().mean()) if bool(correct.any()) else None
        return metrics, outcomes, summary
    if study in ("ensemble-training", "vat"):
        return _trained_here(study, config, ds, x, y, gen, files=files, data_dir=data_dir, device=device)
    if study == "bounds":
        return _bounds(config, ds, x, y, files=files, data_dir=data_dir, device=device)
    if study == "confidence":
        return _confidence(config, x, y, gen, files=files, device=device)
    model = open_ref(config["model"], files=files, device=device, input_shape=shape)
    bounds = ref_bounds(config["model"])
    pred = clean_predictions(model, x, y=y)
    correct = pred == y
    if study == "cosine":
        from advlab.attacks import IFGSM, MIFGSM
        from advlab.evaluation import perturbation_cosine_similarity

        for e in config["eps"]:
            cs = perturbation_cosine_similarity(
                model, x, y, attacks={"I-FGSM": IFGSM(eps=e, steps=steps, bounds=bounds),
                                      "MI-FGSM": MIFGSM(eps=e, steps=steps, decay=1.0, bounds=bounds)},
                only_correct=True, generator=gen)
            idx = correct.nonzero().squeeze(1).cpu()
            for name in ("I-FGSM", "MI-FGSM"):
                per_point = torch.nanmean(cs.update_cosine[name].float().cpu(), dim=1)  # (n_used,)
                value = torch.full((int(y.numel()),), float("nan"))
                value[idx] = per_point
                succ = torch.zeros(int(y.numel()), dtype=torch.bool)
                succ[idx] = cs.success[name].cpu()
                outcomes += _rows(name, e, correct.cpu(), succ, value)
                metrics.append({"attack": name, "eps": e, "name": "mean_cosine",
                                "value": float(torch.nanmean(per_point)) if per_point.numel() else None})
        return metrics, outcomes, summary
    if study == "noise":
        from advlab.attacks import PGD
        from advlab.evaluation import adversarial_subspace_dim, evaluate

        for e in config["eps"]:
            ev = evaluate(model, x, y, attacks={"PGD": PGD(eps=e, steps=steps, random_start=True, bounds=bounds,
                                                           early_stop=True)},
                          eps=[e], seed=int(config["seed"]), progress=False)
            noisy = (x + _noise(tuple(x.shape), e, gen, x)).clamp(*bounds)
            fooled = (clean_predictions(model, noisy) != y).cpu() & correct.cpu()
            outcomes += _rows("noise", e, correct.cpu(), fooled)
            metrics += _rate("noise", e, correct.cpu(), fooled)
            broken = ev.per_point[f"PGD@{e:g}"].cpu().bool()
            outcomes += _rows("PGD", e, correct.cpu(), broken & correct.cpu())
            metrics += _rate("PGD", e, correct.cpu(), broken & correct.cpu())
        # decision-boundary cross-sections (CS231n's maps, after Warde-Farley & Goodfellow 2016): the class
        # on a grid through each of the first `maps` correct points, FGSM direction × a random one;
        # outcome point = row-major cell, norm = the class there, eps = the grid's extent
        from advlab.evaluation import decision_map

        extent, res = 2.5 * float(config["eps"][-1]), 41
        for j, i in enumerate(correct.nonzero().squeeze(1)[: int(config.get("maps", 3))].tolist()):
            dm = decision_map(model, x[i:i + 1], y[i:i + 1], extent=extent, resolution=res, bounds=bounds, generator=gen)
            cls = torch.as_tensor(dm.classes).reshape(-1).cpu()
            outcomes += _rows(f"map {j}", extent, torch.ones_like(cls, dtype=torch.bool), cls != int(y[i]), cls.float())
            metrics += [{"attack": f"map {j}", "eps": extent, "name": "resolution", "value": res},
                        {"attack": f"map {j}", "eps": extent, "name": "true_class", "value": int(y[i])},
                        {"attack": f"map {j}", "eps": extent, "name": "point", "value": int(i)}]
        g_eps = float(config.get("gaas_eps", 2.0))
        dims = adversarial_subspace_dim(model, x, y, eps=g_eps, max_directions=int(config.get("max_directions", 64)),
                                        generator=gen)
        d = dims.dims.cpu()
        measured = d >= 0
        outcomes += _rows("GAAS", g_eps, measured & correct.cpu(), d > 0, d.float())
        metrics.append({"attack": "GAAS", "eps": g_eps, "name": "median_dim",
                        "value": float(d[measured].float().median()) if bool(measured.any()) else None})
        return metrics, outcomes, summary
    if study == "universal":
        from advlab.attacks.universal import UniversalPerturbation

        half = int(y.numel()) // 2
        for e in config["eps"]:
            uap = UniversalPerturbation(norm="linf", eps=e, bounds=bounds, max_epochs=int(config.get("steps", 10)))
            v = uap(model, x[:half], y[:half], generator=gen).perturbation
            xs, ys, cs = x[half:], y[half:], correct[half:].cpu()
            fooled = (clean_predictions(model, (xs + v).clamp(*bounds)) != ys).cpu() & cs
            noise = _noise(tuple(v.shape), e, gen, v)
            by_noise = (clean_predictions(model, (xs + noise).clamp(*bounds)) != ys).cpu() & cs
            outcomes += _rows("UAP", e, cs, fooled, offset=half) + _rows("noise", e, cs, by_noise, offset=half)
            metrics += _rate("UAP", e, cs, fooled) + _rate("noise", e, cs, by_noise)
        return metrics, outcomes, summary
    if study == "targeted":
        from advlab.attacks import PGD

        n_classes = len(ds.class_names)
        bs = int(config["batch_size"])
        for e in config["eps"]:
            attack = PGD(eps=e, steps=steps, random_start=True, bounds=bounds, early_stop=True)
            for t in range(n_classes):
                units = correct & (y != t)
                idx = units.nonzero().squeeze(1)
                hit = torch.zeros_like(units)
                for i in range(0, idx.numel(), bs):
                    b = idx[i:i + bs]
                    r = attack(model, x[b], y[b], target=torch.full_like(y[b], t), generator=gen)
                    hit[b] = r.success.to(hit.device)
                outcomes += _rows(f"target {t}", e, units.cpu(), hit.cpu())
                metrics += _rate(f"target {t}", e, units.cpu(), hit.cpu())
        return metrics, outcomes, summary
    if study == "detector":
        from advlab.attacks import FGSM, PGD
        from advlab.defenses import SafetyNet
        from advlab.defenses.guarded import AdaptivePGD, GuardedClassifier, guarded_success
        from advlab.runs._common import load_data

        e = config["eps"][0]
        fit = load_data(config["data"]["name"], split="train", data_dir=data_dir, limit=int(config.get("fit_n", 1000)))
        xf, yf = fit.x.to(x.device), fit.y.to(x.device)
        pgd = PGD(eps=e, steps=steps, random_start=True, bounds=bounds)
        rf = pgd(model, xf, yf, generator=gen)
        ok_fit = clean_predictions(model, xf) == yf
        det = SafetyNet(levels=2).fit(model, xf[ok_fit], rf.x_adv[rf.success & ok_fit])
        c = correct.cpu()
        rp = pgd(model, x, y, generator=gen)
        rg = FGSM(eps=e, bounds=bounds)(model, x, y)
        for label, r in (("PGD", rp), ("FGSM", rg)):
            broken = r.success.cpu() & c
            flagged = det.predict(r.x_adv).cpu().bool()
            outcomes += _rows(f"{label} flagged", e, broken, flagged & broken)
            metrics += _rate(f"{label} flagged", e, broken, flagged & broken)
        clean_flag = det.predict(x).cpu().bool()
        everyone = torch.ones_like(c)
        outcomes += _rows("clean flagged", e, everyone, clean_flag)
        guarded = GuardedClassifier(model, det)
        gpred, rejected = guarded.predict(x)
        accepted = (gpred == y).cpu() & ~rejected.cpu()
        plain = guarded_success(guarded, rp.x_adv, y).cpu() & accepted
        adaptive = torch.zeros_like(accepted)
        idx = accepted.nonzero().squeeze(1)
        if idx.numel():
            ra = AdaptivePGD(eps=e, steps=max(steps, 50))(guarded, x[idx.to(x.device)], y[idx.to(x.device)], generator=gen)
            adaptive[idx] = ra.success.cpu()
        for label, hit in (("plain PGD through the guard", plain), ("adaptive PGD through the guard", adaptive)):
            outcomes += _rows(label, e, accepted, hit)
            metrics += _rate(label, e, accepted, hit)
        return metrics, outcomes, summary
    if study == "patch":
        import dataclasses

        from advlab.attacks.patch import AdversarialPatch

        half = int(y.numel()) // 2
        target = int(config.get("target", 0))
        for size in config["sizes"]:
            res = AdversarialPatch(target_class=target, patch_size=float(size), steps=int(config.get("steps", 200)),
                                   bounds=bounds)(model, x[:half], y[:half], generator=gen)
            xs, ys = x[half:], y[half:]
            units = (correct[half:] & (ys != target)).cpu()
            place = res.sample_placements(int(ys.numel()), (xs.shape[2], xs.shape[3]), generator=gen)
            hit = (clean_predictions(model, res.apply(xs, place)) == target).cpu() & units
            noise = dataclasses.replace(res, patch=torch.rand(res.patch.shape, generator=gen, device=res.patch.device)
                                        * (bounds[1] - bounds[0]) + bounds[0])
            by_noise = (clean_predictions(model, noise.apply(xs, place)) == target).cpu() & units
            outcomes += (_rows(f"patch {size:g}", float(size), units, hit, offset=half)
                         + _rows(f"random patch {size:g}", float(size), units, by_noise, offset=half))
            metrics += _rate(f"patch {size:g}", float(size), units, hit) + _rate(f"random patch {size:g}", float(size),
                                                                                units, by_noise)
        return metrics, outcomes, summary
    if study == "substitute":
        from advlab.attacks import FGSM, TransferAttack, train_substitute
        from advlab.oracle import Oracle

        seed_n = int(config.get("seed_n", 150))
        sub = train_substitute(Oracle(model, output="label"), x[:seed_n], architecture=config.get("architecture",
                                                                                                   "small-cnn"),
                               rounds=int(config.get("rounds", 4)), epochs=int(config.get("sub_epochs", 10)),
                               num_classes=len(ds.class_names), bounds=bounds, seed=int(config["seed"]),
                               keep_round_models=True)
        xs, ys, units = x[seed_n:], y[seed_n:], correct[seed_n:].cpu()
        for e in config["eps"]:
            for r, sm in enumerate(sub.round_models):
                res = TransferAttack(attack=FGSM(eps=e, bounds=bounds), source=sm.eval())(
                    Oracle(model, output="label"), xs, ys, generator=gen)
                hit = res.target.success.cpu() & units
                queries = int(sum(sub.queries_per_round[:r + 1]))
                rows = _rows(f"round {r}", e, units, hit, offset=seed_n)
                for row in rows:
                    row["queries"] = queries
                outcomes += rows
                metrics += _rate(f"round {r}", e, units, hit) + [
                    {"attack": f"round {r}", "eps": e, "name": "labels_spent", "value": queries}]
        return metrics, outcomes, summary
    raise ValueError(f"unknown study {study!r}: use one of {', '.join(STUDIES)}")


def _trained_here(study: str, config: Mapping[str, Any], ds: Any, x: torch.Tensor, y: torch.Tensor,
                  gen: torch.Generator, *, files: Path, data_dir: str | None, device: str) -> tuple[list, list, dict]:
    """The studies that train their own model inside the cell (its result is the cell's rows)."""
    from advlab.defenses import Standard, train
    from advlab.evaluation import clean_predictions
    from advlab.models import build_seeded
    from advlab.models.user import resolve_device
    from advlab.runs._common import load_data
    from advlab.runs.cells import open_ref

    dev = resolve_device(device)
    seed, epochs, steps = int(config["seed"]), int(config.get("epochs", 2)), int(config.get("steps", 10))
    train_set = load_data(config["data"]["name"], split="train", data_dir=data_dir, limit=config.get("limit"))
    tx, ty = train_set.x.to(dev), train_set.y.to(dev)
    arch = config.get("architecture", "small-cnn")

    def fresh(s: int) -> torch.nn.Module:
        return build_seeded(arch, in_shape=tuple(train_set.input_shape), num_classes=train_set.num_classes, seed=s).to(dev)

    metrics: list[dict[str, Any]] = []
    outcomes: list[dict[str, Any]] = []
    if study == "vat":
        from advlab.defenses import VAT

        # labels balanced over the classes (the first of each class in a seeded permutation), the rest of
        # the training split unlabelled; both models take the same steps: batches of 64 labelled points
        # (+ 128 unlabelled for VAT), Adam 1e-3 decayed linearly to 0 (bench/DISTILL_VAT.md's setting)
        k = int(config["labels"])
        n_cls = train_set.num_classes
        perm = torch.randperm(int(ty.numel()), generator=torch.Generator().manual_seed(seed)).to(ty.device)
        chosen = torch.cat([perm[ty[perm] == c][: k // n_cls] for c in range(n_cls)])
        rest = torch.ones(int(ty.numel()), dtype=torch.bool, device=ty.device)
        rest[chosen] = False
        common = dict(epochs=epochs, batch_size=64, lr=1e-3, lr_schedule="linear", seed=seed, progress=False)
        sup = fresh(seed)
        train(sup, Standard(), tx[chosen], ty[chosen], **common)
        vat = fresh(seed)
        train(vat, VAT(eps=float(config.get("vat_eps", 2.0)), semi_supervised=True), tx[chosen], ty[chosen],
              x_unlabelled=tx[rest], unlabelled_batch_size=128, **common)
        everyone = torch.ones(int(y.numel()), dtype=torch.bool)
        for label, m in (("supervised", sup.eval()), ("vat", vat.eval())):
            ok = (clean_predictions(m, x) == y).cpu()
            outcomes += _rows(label, 0.0, everyone, ok)
            metrics.append({"attack": label, "eps": 0.0, "name": "clean_accuracy", "value": float(ok.float().mean())})
        return metrics, outcomes, {}
    from advlab.attacks import FGSM, IFGSM, MIFGSM, TransferAttack
    from advlab.models import Ensemble
    from advlab.oracle import Oracle
    from advlab.runs.defend import build_recipe

    shape = tuple(ds.input_shape)
    refs = config["models"]
    standard = open_ref(refs[0], files=files, device=device, input_shape=shape)
    static = [open_ref(r, files=files, device=device, input_shape=shape) for r in refs[1:-1]]
    source = open_ref(refs[-1], files=files, device=device, input_shape=shape)
    e_train = float(config.get("train_eps", config["eps"][0]))
    defended = fresh(seed)
    train(defended, build_recipe("ensemble", eps=e_train, static_models=static), tx, ty, epochs=epochs, seed=seed,
          progress=False)
    defended.eval()
    targets = {"standard": standard, "ens-adv": defended}
    correct = {k: (clean_predictions(m, x, y=y) == y) for k, m in targets.items()}
    bs = int(config["batch_size"])

    def shown(attack: Any, crafted_on: torch.nn.Module, target: str) -> torch.Tensor:
        idx = correct[target].nonzero().squeeze(1)
        hit = torch.zeros_like(correct[target])
        for i in range(0, idx.numel(), bs):
            b = idx[i:i + bs]
            r = TransferAttack(attack=attack, source=crafted_on)(Oracle(targets[target], output="label"), x[b], y[b],
                                                                 generator=gen)
            hit[b] = r.target.success.to(hit.device)
        return hit.cpu()

    ens = Ensemble([*static, source], fusion="logits").eval()
    for e in config["eps"]:
        makers = {"FGSM": FGSM(eps=e), "I-FGSM": IFGSM(eps=e, steps=steps), "MI-FGSM": MIFGSM(eps=e, steps=steps)}
        for name, attack in makers.items():
            for target in targets:
                label = f"{name} → {target}"
                hit = shown(attack, source, target)
                outcomes += _rows(label, e, correct[target].cpu(), hit)
                metrics += _rate(label, e, correct[target].cpu(), hit)
        for name in ("I-FGSM", "MI-FGSM"):
            label = f"{name} ensemble → ens-adv"
            hit = shown(makers[name], ens, "ens-adv")
            outcomes += _rows(label, e, correct["ens-adv"].cpu(), hit)
            metrics += _rate(label, e, correct["ens-adv"].cpu(), hit)
    for k in targets:
        metrics.append({"attack": k, "eps": None, "name": "clean_accuracy", "value": float(correct[k].float().mean())})
    return metrics, outcomes, {}


def _bounds(config: Mapping[str, Any], ds: Any, x: torch.Tensor, y: torch.Tensor, *, files: Path,
            data_dir: str | None, device: str) -> tuple[list, list, dict]:
    from advlab.evaluation.theory import bounds_table
    from advlab.models.generative import VAE, fit_vae
    from advlab.runs._common import load_data
    from advlab.runs.cells import open_ref

    shape = tuple(ds.input_shape)
    seed = int(config["seed"])
    train_set = load_data(config["data"]["name"], split="train", data_dir=data_dir, limit=config.get("limit"))
    latent = int(config.get("latent_dim", 10))
    vae = VAE(in_shape=shape, latent_dim=latent, hidden=400, seed=seed)
    fit_vae(vae, train_set.x, epochs=int(config.get("vae_epochs", 8)), batch_size=128, lr=1e-3, seed=seed,
            progress=False)
    vae.eval()
    classifiers = {r.get("name", f"model {i}"): open_ref(r, files=files, device="cpu", input_shape=shape)
                   for i, r in enumerate(config["models"])}
    projected_n = int(config.get("projected_n", 0))
    theorems: dict[str, Any] = {}
    if projected_n:  # Theorem 2: the classifier composed with the projection onto the generator's range
        theorems = dict(projected=True, projected_n=projected_n, query_budget=int(config.get("query_budget", 1000)),
                        projection={"steps": int(config.get("projection_steps", 300)), "encoder": lambda t: vae.encode(t)[0]})
    pairs = [tuple(p) for p in config.get("transfer_pairs", [])]
    if pairs:  # Theorem 3: the smallest generated perturbation that fools both models of each pair
        theorems["transfer"] = pairs
    table = bounds_table(classifiers, vae.decoder, latent_dim=latent, n=int(config.get("points", 100)), seed=seed,
                         test_data=(x.cpu(), y.cpu()), input_shape=shape, progress=False, **theorems)
    metrics: list[dict[str, Any]] = [{"attack": "bounds", "eps": None, "name": "lipschitz", "value": float(table.lipschitz)},
                                     {"attack": "bounds", "eps": None, "name": "median_bound_r_in",
                                      "value": float(table.bound("r_in"))}]
    outcomes: list[dict[str, Any]] = []
    for name, res in table.results.items():
        metrics.append({"attack": name, "eps": None, "name": "classwise_bound_r_in",
                        "value": float(table.classwise_bound(name))})
        metrics.append({"attack": name, "eps": None, "name": "fraction_r_in_below_bound",
                        "value": float(table.fraction_below_bound(name))})
        for q in ("latent", "r_in", "r_unc"):
            v = res.values(q).double().cpu()
            found = torch.isfinite(v)
            outcomes += _rows(f"{q} {name}", 0.0, torch.ones_like(found), found, v)
        if name in table.projected:
            pr = table.projected[name]
            for q in ("r_unc_projected", "r_in_tight"):
                v = getattr(pr, q).double().cpu()
                found = torch.isfinite(v)
                outcomes += _rows(f"{q} {name}", 0.0, pr.label_kept.cpu().bool(), found, v)
    for pair, tr in table.transfer.items():
        for key in ("delta", "f_transfers", "delta_samples"):
            metrics.append({"attack": f"joint {pair}", "eps": None, "name": key, "value": float(getattr(tr, key))})
        for q, v in (("joint", tr.joint), ("joint_latent", tr.joint_latent)):
            v = v.double().cpu()
            found = torch.isfinite(v)
            outcomes += _rows(f"{q} {pair}", 0.0, torch.ones_like(found), found, v)
    return metrics, outcomes, {}


def _confidence(config: Mapping[str, Any], x: torch.Tensor, y: torch.Tensor, gen: torch.Generator, *,
                files: Path, device: str) -> tuple[list, list, dict]:
    from advlab.attacks import FGSM
    from advlab.runs.cells import open_ref, ref_bounds

    ref = config["model"]
    model = open_ref(ref, files=files, device=device, input_shape=tuple(x.shape[1:]))
    bounds = ref_bounds(ref)
    units = getattr(model, "unit_outputs", None)
    bs = int(config["batch_size"])

    def read(inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        preds, soft, unit = [], [], []
        with torch.no_grad():
            for i in range(0, inputs.shape[0], bs):
                logits = model(inputs[i:i + bs])
                preds.append(logits.argmax(1))
                soft.append(logits.softmax(1).amax(1))
                if units is not None:
                    unit.append(logits.exp().amax(1))  # exp(logit_k): RBFNet.unit_outputs
        return torch.cat(preds).cpu(), torch.cat(soft).double().cpu(), torch.cat(unit).double().cpu() if unit else None

    metrics: list[dict[str, Any]] = []
    outcomes: list[dict[str, Any]] = []

    def record(label: str, eps: float, correct: torch.Tensor, success: torch.Tensor, soft: torch.Tensor,
               unit: torch.Tensor | None) -> None:
        nonlocal outcomes
        outcomes += _rows(label, eps, correct, success, soft)
        if unit is not None:
            outcomes += _rows(f"{label} unit", eps, correct, success, unit)
        pick = success if bool(success.any()) else torch.ones_like(success)
        metrics.append({"attack": label, "eps": eps, "name": "mean_confidence_where_wrong" if bool(success.any())
                        else "mean_confidence", "value": float(soft[pick].mean())})
        if unit is not None:
            metrics.append({"attack": label, "eps": eps, "name": "mean_unit_where_wrong" if bool(success.any())
                            else "mean_unit", "value": float(unit[pick].mean())})

    pred, soft, unit = read(x)
    correct = pred == y.cpu()
    record("clean", 0.0, correct, ~correct, soft, unit)
    for e in config["eps"]:
        adv = torch.cat([FGSM(eps=float(e), bounds=bounds)(model, x[i:i + bs], y[i:i + bs]).x_adv
                         for i in range(0, x.shape[0], bs)])
        p_adv, s_adv, u_adv = read(adv)
        record("FGSM", float(e), correct, correct & (p_adv != y.cpu()), s_adv, u_adv)
    lo, hi = bounds
    noise = torch.rand(x.shape, generator=gen, device=x.device, dtype=x.dtype) * (hi - lo) + lo
    _, s_noise, u_noise = read(noise)
    none = torch.zeros(x.shape[0], dtype=torch.bool)
    record("noise", 0.0, none, none, s_noise, u_noise)
    return metrics, outcomes, {"units": units is not None}

