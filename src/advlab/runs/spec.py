"""Experiment specs: a TOML file that describes a whole study, expanded into cells.

A spec names data sets, models and measurements; ``expand`` turns it into **cells**, each a fully
resolved configuration with a content hash. A model that a measurement needs (a zoo architecture
trained, or defended, by the spec) is a cell of its own, done once and reused by hash::

    [data.digits]
    name = "digits"          # a registry name, npz:PATH, csv:PATH or folder:PATH (relative to the spec;
                             #  the file's content is part of the cells' hashes)
    n = 200                  # test points (the first n of the test split)

    [models.cnn]
    zoo = "small-cnn"        # trained by the spec on its data (or: checkpoint = "runs/cnn",
    data = "digits"          #  or factory = "pkg.mod:fn" with weights = "w.safetensors",
                             #  or sklearn = "tree.skops", a fitted estimator saved with skops)
    epochs = 3

    [models.cnn-pgd]
    zoo = "small-cnn"
    data = "digits"
    recipe = "pgd"           # a defense recipe of `advlab defend`
    recipe_eps = 0.1

    [[measure]]
    kind = "robust"          # robust | strong | minimal | transfer | audit | certify | techniques
    models = ["cnn", "cnn-pgd"]
    data = "digits"
    attacks = ["fgsm", { name = "pgd", steps = 10 }]
    eps = [0.05, 0.1, 0.2]
    seeds = [0, 1]

Everything is checked before anything runs: unknown keys, wrong types and impossible combinations
(a minimal-norm attack given an ε, a black-box attack in a white-box measurement, a model that is
not defined) are a :class:`SpecError` naming the key, the file and line, and the valid choices.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

#: bump when a cell's meaning changes for the same configuration (old results are then not reused)
CELL_FORMAT = 1

MEASURE_KINDS = ("robust", "strong", "minimal", "transfer", "audit", "certify", "techniques", "study")
MODEL_SOURCES = ("zoo", "checkpoint", "factory", "sklearn")

_DATA_KEYS = {"name", "n", "data_dir"}
_ZOO_KEYS = {"zoo", "data", "epochs", "seed", "lr", "batch_size", "limit", "recipe", "recipe_eps",
             "recipe_steps", "alpha", "beta", "vat_eps", "lr_schedule", "sigma", "temperature", "k", "lam", "hidden"}
_CHECKPOINT_KEYS = {"checkpoint"}
_SKLEARN_KEYS = {"sklearn", "trust"}
_FACTORY_KEYS = {"factory", "weights", "input_shape", "bounds", "mean", "std", "classes"}
_MEASURE_KEYS = {
    "robust": {"kind", "models", "data", "attacks", "eps", "norm", "seeds", "threat", "batch_size", "budget"},
    "strong": {"kind", "models", "data", "eps", "norm", "seeds", "steps", "batch_size", "version"},
    "minimal": {"kind", "models", "data", "attacks", "norm", "seeds", "batch_size"},
    "transfer": {"kind", "sources", "targets", "data", "attacks", "eps", "norm", "seeds", "batch_size"},
    "audit": {"kind", "models", "data", "eps", "norm", "seeds", "steps", "batch_size", "max_points"},
    "certify": {"kind", "models", "data", "method", "eps", "sigma", "samples", "alpha", "seeds", "steps",
                "batch_size"},
    # Papernot et al.'s cross-technique matrix: the spec fits the techniques itself (no models =)
    "techniques": {"kind", "data", "learners", "eps", "norm", "seeds", "steps", "budget", "limit", "batch_size"},
    # the seeds' studies that are not an attack grid (advlab.runs.study_cells)
    "study": {"kind", "study", "models", "data", "eps", "seeds", "steps", "batch_size", "gaas_eps", "max_directions",
              "fit_n", "sizes", "target", "seed_n", "rounds", "sub_epochs", "architecture", "epochs", "limit",
              "labels", "vat_eps", "train_eps", "points", "latent_dim", "vae_epochs", "projected_n", "query_budget",
              "projection_steps",
              "maps", "transfer_pairs"},
}
_TOP_KEYS = {"study", "data", "models", "measure"}
_STUDY_KEYS = {"name", "description"}
_ATTACK_OPTIONS = {"name", "steps", "step_size", "random_start", "restarts", "loss", "budget",
                   "targeted", "decay", "confidence", "lr", "n_target_classes", "early_stop",
                   "binary_search_steps", "c_init", "gamma", "theta", "saliency", "pixels"}
RECIPES = ("standard", "fgsm-mix", "batch-mix", "pgd", "fast", "trades", "vat", "ibp", "gaussian", "distill", "ovr")


class SpecError(ValueError):
    """A spec that cannot run: the message names the key, the file and line, and the fix."""


@dataclass(frozen=True)
class Cell:
    """One unit of work: ``kind`` (``train`` or a measurement kind), its fully resolved
    ``config`` (JSON-ready), the hashes of the cells it needs, and a label for people."""

    kind: str
    config: Mapping[str, Any] = field(hash=False)
    needs: tuple[str, ...] = ()
    label: str = ""

    @property
    def hash(self) -> str:
        return cell_hash(self.kind, self.config)


def cell_hash(kind: str, config: Mapping[str, Any]) -> str:
    """The content hash of a cell: SHA-256 of its canonical JSON (sorted keys, no spaces), 16 hex
    digits. Stable across runs and machines; any setting that changes the result changes it."""
    text = json.dumps({"format": CELL_FORMAT, "kind": kind, "config": config}, sort_keys=True,
                      separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@dataclass
class Spec:
    """A parsed, validated spec and its cells in dependency order (train cells first)."""

    path: Path | None
    text: str
    name: str
    cells: list[Cell]

    @property
    def measurement_cells(self) -> list[Cell]:
        return [c for c in self.cells if c.kind != "train"]


# --- locating a key in the file, for messages ----------------------------------------------------

class _Where:
    """Finds the line of a key (inside a table) in the spec's text, for error messages."""

    def __init__(self, text: str, path: Path | None) -> None:
        self.lines = text.splitlines()
        self.path = path

    def line(self, table: str | None, key: str | None = None, index: int | None = None) -> int | None:
        start = 0
        if table:
            header = re.compile(r"^\s*\[\[?\s*" + re.escape(table).replace(r"\.", r"\s*\.\s*") + r"\s*\]\]?\s*(#.*)?$")
            hits = [i for i, ln in enumerate(self.lines) if header.match(ln)]
            if index is not None and len(hits) > index:
                start = hits[index]
            elif hits:
                start = hits[0]
            else:
                return None
            if key is None:
                return start + 1
        if key is None:
            return None
        pat = re.compile(r"^\s*" + re.escape(key) + r"\s*=")
        for i in range(start + (1 if table else 0), len(self.lines)):
            if table and i > start and re.match(r"^\s*\[", self.lines[i]):
                break
            if pat.match(self.lines[i]):
                return i + 1
        return None

    def at(self, table: str | None, key: str | None = None, index: int | None = None) -> str:
        where = str(self.path) if self.path else "the spec"
        line = self.line(table, key, index)
        return f"{where}:{line}" if line else where


# --- parsing ---------------------------------------------------------------------------------

def load_spec(path: str | Path) -> Spec:
    """Read, validate and expand the spec file at ``path``."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"no spec file {p}") from None
    except UnicodeDecodeError as exc:
        raise SpecError(f"{p} is not UTF-8 text: {exc}") from None
    return parse_spec(text, path=p)


def parse_spec(text: str, *, path: Path | None = None) -> Spec:
    """Validate and expand spec ``text`` (``path`` is for messages and relative paths)."""
    where = _Where(text, path)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{where.at(None)}: not valid TOML: {exc}") from None
    _known(raw, _TOP_KEYS, where, None, "the spec's top level")
    base = path.parent if path is not None else Path.cwd()
    study = _table(raw.get("study", {}), where, "study")
    _known(study, _STUDY_KEYS, where, "study", "[study]")
    name = _str(study.get("name", path.stem if path else "study"), where, "study", "name")
    datasets = _datasets(_table(raw.get("data", {}), where, "data"), where, base)
    models = _table(raw.get("models", {}), where, "models")
    fits_its_own = all(isinstance(m, dict) and (m.get("kind") == "techniques" or
                                                (m.get("kind") == "study" and m.get("study") == "vat"))
                       for m in raw.get("measure", []) or [{}])
    if not models and not fits_its_own:
        raise SpecError(f"{where.at(None)}: the spec defines no [models.NAME] table")
    model_cells: dict[str, Cell | dict[str, Any]] = {}
    for mname, mraw in models.items():
        model_cells[mname] = _model(mname, _table(mraw, where, f"models.{mname}"), datasets, where, base)
    measures = raw.get("measure", [])
    if not isinstance(measures, list) or not all(isinstance(m, dict) for m in measures):
        raise SpecError(f"{where.at(None)}: measurements are [[measure]] tables")
    if not measures:
        raise SpecError(f"{where.at(None)}: the spec has no [[measure]] table; add one, e.g. kind = \"robust\"")
    cells: list[Cell] = [c for c in model_cells.values() if isinstance(c, Cell)]
    for i, m in enumerate(measures):
        cells.extend(_measure(i, m, datasets, model_cells, where, base))
    seen: dict[str, Cell] = {}
    for c in cells:
        seen.setdefault(c.hash, c)  # the same cell asked twice is one cell
    ordered = [c for c in seen.values() if c.kind == "train"] + [c for c in seen.values() if c.kind != "train"]
    return Spec(path=path, text=text, name=name, cells=ordered)


def _known(table: Mapping[str, Any], valid: set[str], where: _Where, tname: str | None, what: str,
           index: int | None = None) -> None:
    unknown = sorted(set(table) - valid)
    if unknown:
        key = unknown[0]
        hint = _closest(key, valid)
        raise SpecError(f"{where.at(tname, key, index)}: unknown key {key!r} in {what}"
                        + (f" (did you mean {hint!r}?)" if hint else "")
                        + f"; valid keys: {', '.join(sorted(valid))}")


def _closest(key: str, valid: set[str]) -> str | None:
    import difflib

    match = difflib.get_close_matches(key, sorted(valid), n=1, cutoff=0.6)
    return match[0] if match else None


def _table(value: Any, where: _Where, tname: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SpecError(f"{where.at(tname)}: [{tname}] must be a table, got {type(value).__name__}")
    return value


def _str(value: Any, where: _Where, tname: str | None, key: str, index: int | None = None) -> str:
    if not isinstance(value, str) or not value:
        raise SpecError(f"{where.at(tname, key, index)}: {key} must be a non-empty string, got {value!r}")
    return value


def _int(value: Any, where: _Where, tname: str | None, key: str, *, minimum: int = 1,
         index: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SpecError(f"{where.at(tname, key, index)}: {key} must be an integer >= {minimum}, got {value!r}")
    return value


def _float(value: Any, where: _Where, tname: str | None, key: str, index: int | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SpecError(f"{where.at(tname, key, index)}: {key} must be a number, got {value!r}")
    return float(value)


FILE_DATA = ("npz:", "csv:", "folder:")


def _file_data(name: str, base: Path, where: _Where, tname: str, index: int | None = None) -> dict[str, Any]:
    """A data set read from a file: the path resolved against the spec's folder, and its content's
    digest, so that a changed file gives new cells instead of reusing results of the old one."""
    kind, _, rest = name.partition(":")
    path = (base / rest).resolve()
    if kind == "folder":
        if not path.is_dir():
            raise SpecError(f"{where.at(tname, 'name' if index is None else 'data', index)}: no folder {path}")
        h = hashlib.sha256()
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            h.update(f"{f.relative_to(path).as_posix()}\0{f.stat().st_size}\0".encode())
        return {"name": f"folder:{path}", "listing_sha256": h.hexdigest()}
    if not path.is_file():
        raise SpecError(f"{where.at(tname, 'name' if index is None else 'data', index)}: no file {path}")
    return {"name": f"{kind}:{path}", "sha256": _file_sha256(path)}


def _known_data(name: str) -> bool:
    from advlab.data import available_datasets

    return name in available_datasets() or name.startswith(FILE_DATA)


def _datasets(raw: dict[str, Any], where: _Where, base: Path) -> dict[str, dict[str, Any]]:
    from advlab.data import available_datasets

    out = {}
    for dname, d in raw.items():
        tname = f"data.{dname}"
        d = _table(d, where, tname)
        _known(d, _DATA_KEYS, where, tname, f"[{tname}]")
        name = _str(d.get("name", dname), where, tname, "name")
        if not _known_data(name):
            raise SpecError(f"{where.at(tname, 'name')}: unknown dataset {name!r}; use one of "
                            f"{', '.join(available_datasets())}, npz:PATH, csv:PATH or folder:PATH")
        n = _int(d["n"], where, tname, "n") if "n" in d else None
        entry: dict[str, Any] = {"name": name, "n": n}
        if name.startswith(FILE_DATA):
            entry.update(_file_data(name, base, where, tname))
        if "data_dir" in d:
            entry["data_dir"] = _str(d["data_dir"], where, tname, "data_dir")
        out[dname] = entry
    return out


def _data_ref(value: Any, datasets: dict[str, dict[str, Any]], where: _Where, tname: str,
              index: int | None = None, base: Path | None = None) -> dict[str, Any]:
    """A measurement's or model's ``data``: a [data.NAME] of the spec, or a dataset name."""
    from advlab.data import available_datasets

    name = _str(value, where, tname, "data", index)
    if name in datasets:
        return {k: v for k, v in datasets[name].items() if k != "data_dir"}
    if _known_data(name):
        entry: dict[str, Any] = {"name": name, "n": None}
        if name.startswith(FILE_DATA):
            entry.update(_file_data(name, base if base is not None else Path.cwd(), where, tname, index))
        return entry
    raise SpecError(f"{where.at(tname, 'data', index)}: data {name!r} is neither a [data.NAME] of this spec "
                    f"({', '.join(datasets) or 'none defined'}) nor a dataset ({', '.join(available_datasets())}, "
                    "npz:PATH, csv:PATH, folder:PATH)")


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _model(mname: str, m: dict[str, Any], datasets: dict[str, dict[str, Any]], where: _Where,
           base: Path) -> Cell | dict[str, Any]:
    """A zoo model is a train cell; a checkpoint or factory is a resolved reference (a dict)."""
    tname = f"models.{mname}"
    sources = [s for s in MODEL_SOURCES if s in m]
    if len(sources) != 1:
        raise SpecError(f"{where.at(tname)}: [{tname}] needs exactly one of zoo = ARCHITECTURE, "
                        f"checkpoint = DIR, factory = \"module:callable\" or sklearn = FILE.skops; got {sources or 'none'}")
    kind = sources[0]
    if kind == "zoo":
        from advlab.models import list_architectures

        _known(m, _ZOO_KEYS, where, tname, f"[{tname}] (a zoo model)")
        arch = _str(m["zoo"], where, tname, "zoo")
        if arch not in list_architectures():
            raise SpecError(f"{where.at(tname, 'zoo')}: unknown architecture {arch!r}; use one of "
                            f"{', '.join(list_architectures())}")
        if "data" not in m:
            raise SpecError(f"{where.at(tname)}: [{tname}] trains {arch}: it needs data = ... to train on")
        recipe = m.get("recipe", "standard")
        if recipe not in RECIPES:
            raise SpecError(f"{where.at(tname, 'recipe')}: unknown recipe {recipe!r}; use one of {', '.join(RECIPES)}")
        config = {
            "source": "zoo", "architecture": arch,
            "data": {k: v for k, v in _data_ref(m["data"], datasets, where, tname, base=base).items()
                     if k in ("name", "sha256", "listing_sha256")},
            "epochs": _int(m.get("epochs", 2), where, tname, "epochs"),
            "seed": _int(m.get("seed", 0), where, tname, "seed", minimum=0),
            "lr": _float(m.get("lr", 1e-3), where, tname, "lr"),
            "batch_size": _int(m.get("batch_size", 128), where, tname, "batch_size"),
            "limit": _int(m["limit"], where, tname, "limit") if "limit" in m else None,
            "lr_schedule": _str(m.get("lr_schedule", "constant"), where, tname, "lr_schedule"),
            "recipe": {"name": recipe,
                       **({"eps": _float(m.get("recipe_eps", 0.1), where, tname, "recipe_eps")}
                          if recipe not in ("standard", "vat", "gaussian", "distill", "ovr") else {}),
                       **({"steps": _int(m["recipe_steps"], where, tname, "recipe_steps")}
                          if "recipe_steps" in m else {}),
                       **({k: _float(m[k], where, tname, k) for k in ("alpha", "beta", "vat_eps", "sigma") if k in m}),
                       # defensive distillation (Papernot et al. 2016): teacher and student at T
                       **({"temperature": _float(m.get("temperature", 100.0), where, tname, "temperature")}
                          if recipe == "distill" else {}),
                       # Kurakin et al. 2017's batch mix: k of each batch adversarial, their loss weighted λ
                       **({"k": _int(m.get("k", 64), where, tname, "k"), "lam": _float(m.get("lam", 0.3), where, tname, "lam")}
                          if recipe == "batch-mix" else {})},
        }
        if "hidden" in m:  # the architecture's hidden widths (absent: its defaults, and the old hashes)
            from advlab.models.zoo import ARCHITECTURES

            hidden = m["hidden"]
            if "hidden" not in getattr(ARCHITECTURES[arch], "OPTIONS", ()):
                raise SpecError(f"{where.at(tname, 'hidden')}: architecture {arch!r} takes no hidden widths")
            if not isinstance(hidden, list) or any(isinstance(w, bool) or not isinstance(w, int) or w < 1
                                                   for w in hidden):
                raise SpecError(f"{where.at(tname, 'hidden')}: hidden must be a list of positive layer widths "
                                f"([] for none), got {hidden!r}")
            config["options"] = {"hidden": [int(w) for w in hidden]}
        return Cell(kind="train", config=config, label=mname)
    if kind == "checkpoint":
        _known(m, _CHECKPOINT_KEYS, where, tname, f"[{tname}] (a checkpoint)")
        ck = base / _str(m["checkpoint"], where, tname, "checkpoint")
        from advlab.models.checkpoint import WEIGHTS_FILE

        weights = ck / WEIGHTS_FILE
        if not weights.is_file():
            raise SpecError(f"{where.at(tname, 'checkpoint')}: no checkpoint at {ck} ({WEIGHTS_FILE} missing)")
        return {"source": "checkpoint", "path": str(ck.resolve()), "sha256": _file_sha256(weights), "name": mname}
    if kind == "sklearn":
        _known(m, _SKLEARN_KEYS, where, tname, f"[{tname}] (a scikit-learn estimator)")
        path = base / _str(m["sklearn"], where, tname, "sklearn")
        if not path.is_file():
            raise SpecError(f"{where.at(tname, 'sklearn')}: no estimator file at {path}")
        trust = m.get("trust", [])
        if not isinstance(trust, list) or not all(isinstance(t, str) for t in trust):
            raise SpecError(f"{where.at(tname, 'trust')}: trust must be a list of type names, got {trust!r}")
        return {"source": "sklearn", "path": str(path.resolve()), "sha256": _file_sha256(path),
                "trust": sorted(trust), "name": mname}
    _known(m, _FACTORY_KEYS, where, tname, f"[{tname}] (a user factory)")
    ref: dict[str, Any] = {"source": "factory", "factory": _str(m["factory"], where, tname, "factory"),
                           "name": mname}
    if "weights" in m:
        w = base / _str(m["weights"], where, tname, "weights")
        if w.suffix != ".safetensors" or not w.is_file():
            raise SpecError(f"{where.at(tname, 'weights')}: weights must be an existing .safetensors file, got {w}")
        ref.update(weights=str(w.resolve()), weights_sha256=_file_sha256(w))
    for key in ("input_shape", "bounds", "mean", "std"):
        if key in m:
            vals = m[key]
            if not isinstance(vals, list) or not vals:
                raise SpecError(f"{where.at(tname, key)}: {key} must be a list of numbers, got {vals!r}")
            ref[key] = ([_int(v, where, tname, key) for v in vals] if key == "input_shape"
                        else [_float(v, where, tname, key) for v in vals])
    if "classes" in m:
        ref["classes"] = _int(m["classes"], where, tname, "classes", minimum=2)
    if ref["factory"].split(":")[0].endswith(".py"):
        path, _, attr = ref["factory"].rpartition(":")
        file = base / path
        ref["factory"] = f"{file.resolve()}:{attr}"
        if file.is_file():
            ref["factory_sha256"] = _file_sha256(file)
    return ref


def _model_ref(name: Any, models: dict[str, Cell | dict[str, Any]], where: _Where, tname: str, key: str,
               index: int) -> tuple[dict[str, Any], tuple[str, ...]]:
    """What a measurement stores about one of its models: for a trained model its cell hash (a
    dependency), for a checkpoint or factory its resolved reference."""
    if not isinstance(name, str) or name not in models:
        raise SpecError(f"{where.at(tname, key, index)}: model {name!r} is not defined; models of this spec: "
                        f"{', '.join(models)}")
    m = models[name]
    if isinstance(m, Cell):
        return {"source": "trained", "cell": m.hash, "name": name, "architecture": m.config["architecture"],
                "recipe": m.config["recipe"]["name"]}, (m.hash,)
    return dict(m), ()


def _attacks(value: Any, where: _Where, tname: str, index: int, *, kind: str) -> list[dict[str, Any]]:
    from advlab.attacks.registry import attack_key, entry

    if not isinstance(value, list) or not value:
        raise SpecError(f"{where.at(tname, 'attacks', index)}: attacks must be a non-empty list of names or "
                        "{ name = ..., option = ... } tables")
    out = []
    for a in value:
        opts = {"name": a} if isinstance(a, str) else a
        if not isinstance(opts, dict) or "name" not in opts:
            raise SpecError(f"{where.at(tname, 'attacks', index)}: each attack is a name or a table with a name, "
                            f"got {a!r}")
        unknown = sorted(set(opts) - _ATTACK_OPTIONS)
        if unknown:
            raise SpecError(f"{where.at(tname, 'attacks', index)}: attack option {unknown[0]!r} is not known; "
                            f"options: {', '.join(sorted(_ATTACK_OPTIONS))}")
        try:
            spec = entry(opts["name"])
        except ValueError as exc:
            raise SpecError(f"{where.at(tname, 'attacks', index)}: {exc}") from None
        if spec.kind == "universal":
            raise SpecError(f"{where.at(tname, 'attacks', index)}: {opts['name']} is universal; not a spec kind yet")
        if kind in ("robust", "transfer") and spec.kind == "minimal":
            raise SpecError(f"{where.at(tname, 'attacks', index)}: {opts['name']} is a minimal-perturbation "
                            "attack: it takes no eps; put it in a kind = \"minimal\" measurement")
        if kind == "minimal" and (spec.kind != "minimal" or spec.black_box):
            raise SpecError(f"{where.at(tname, 'attacks', index)}: {opts['name']} is not a white-box "
                            "minimal-perturbation attack; a minimal measurement takes deepfool, fmn or cw")
        if kind == "transfer" and spec.black_box:
            raise SpecError(f"{where.at(tname, 'attacks', index)}: transfer crafts a white-box attack on the "
                            f"source; {opts['name']} is black-box")
        from advlab.attacks.registry import make_attack

        options = {k: v for k, v in sorted(opts.items()) if k != "name"}
        try:  # the options the attack takes, checked now rather than in the middle of the grid
            make_attack(opts["name"], strict=True, **options,
                        **({"eps": 1.0 if getattr(spec.cls, "norm", None) == "l0" else 0.1}
                           if spec.kind == "bounded" and "eps" not in options else {}))
        except (TypeError, ValueError) as exc:
            raise SpecError(f"{where.at(tname, 'attacks', index)}: {exc}") from None
        out.append({"name": attack_key(opts["name"]), **options})
    return out


def _full_budget(attack: dict[str, Any]) -> dict[str, Any]:
    """``early_stop = false`` for an iterative attack that did not set it."""
    import dataclasses

    from advlab.attacks.registry import entry

    fields = {f.name for f in dataclasses.fields(entry(attack["name"]).cls)}
    if "early_stop" in fields and "early_stop" not in attack:
        return {**attack, "early_stop": False}
    return attack


def _eps_list(value: Any, where: _Where, tname: str, index: int) -> list[float]:
    if not isinstance(value, list) or not value:
        raise SpecError(f"{where.at(tname, 'eps', index)}: eps must be a non-empty list of increasing numbers")
    eps = [_float(e, where, tname, "eps", index) for e in value]
    if any(b <= a for a, b in zip(eps, eps[1:])) or eps[0] < 0:
        raise SpecError(f"{where.at(tname, 'eps', index)}: eps must be >= 0 and strictly increasing, got {eps}")
    return eps


def _measure(i: int, m: dict[str, Any], datasets: dict[str, dict[str, Any]],
             models: dict[str, Cell | dict[str, Any]], where: _Where, base: Path) -> list[Cell]:
    tname = "measure"
    kind = m.get("kind")
    if kind not in MEASURE_KINDS:
        raise SpecError(f"{where.at(tname, 'kind', i)}: [[measure]] #{i + 1} needs kind = one of "
                        f"{', '.join(MEASURE_KINDS)}; got {kind!r}")
    if kind == "minimal" and "eps" in m:
        raise SpecError(f"{where.at(tname, 'eps', i)}: a minimal measurement finds each point's smallest "
                        "perturbation: it takes no eps (robust accuracy at any ε is read off the distances)")
    _known(m, _MEASURE_KEYS[kind], where, tname, f"a kind = {kind!r} measurement", index=i)
    if "data" not in m:
        raise SpecError(f"{where.at(tname, None, i)}: [[measure]] #{i + 1} needs data = ...")
    data = _data_ref(m["data"], datasets, where, tname, i, base=base)
    seeds = m.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds:
        raise SpecError(f"{where.at(tname, 'seeds', i)}: seeds must be a non-empty list of integers")
    seeds = [_int(s, where, tname, "seeds", minimum=0, index=i) for s in seeds]
    norm = m.get("norm", "l2" if kind == "minimal" else "linf")
    if norm not in ("linf", "l2", "l1", "l0") or (norm == "l0" and kind != "robust"):
        raise SpecError(f"{where.at(tname, 'norm', i)}: norm must be linf, l2 or l1 (or l0, the feature count of "
                        f"the sparse attacks, in a robust measurement), got {norm!r}")
    batch = _int(m.get("batch_size", 250), where, tname, "batch_size", index=i)
    cells = []
    if kind == "techniques":
        from advlab.evaluation.techniques import LEARNERS

        if norm not in ("linf", "l2"):
            raise SpecError(f"{where.at(tname, 'norm', i)}: the technique matrix takes norm linf or l2, got {norm!r}")
        learners = m.get("learners", list(LEARNERS))
        if (not isinstance(learners, list) or not learners
                or any(not isinstance(k, str) or k not in LEARNERS for k in learners)):
            raise SpecError(f"{where.at(tname, 'learners', i)}: learners must be a list of {', '.join(LEARNERS)}; "
                            f"got {learners!r}")
        eps = _eps_list(m.get("eps"), where, tname, i)
        if eps[0] <= 0:
            raise SpecError(f"{where.at(tname, 'eps', i)}: the technique matrix needs eps > 0, got {eps}")
        for seed in seeds:
            cells.append(Cell(kind=kind, label=f"techniques {', '.join(learners)} on {data['name']}",
                              config={"data": data, "learners": [k for k in LEARNERS if k in learners],
                                      "eps": eps, "norm": norm, "seed": seed, "batch_size": batch,
                                      "steps": _int(m.get("steps", 20), where, tname, "steps", index=i),
                                      "budget": _int(m.get("budget", 1000), where, tname, "budget", index=i),
                                      "limit": _int(m["limit"], where, tname, "limit", index=i)
                                      if "limit" in m else None}))
        return cells
    if kind == "study":
        from advlab.runs.study_cells import STUDIES

        study = m.get("study")
        if study not in STUDIES:
            raise SpecError(f"{where.at(tname, 'study', i)}: study must be one of {', '.join(STUDIES)}; got {study!r}")
        names = m.get("models", [] if study == "vat" else None)
        least = {"ensemble": 2, "ensemble-training": 3, "vat": 0, "bounds": 1}.get(study, 1)
        if not isinstance(names, list) or len(names) < least:
            raise SpecError(f"{where.at(tname, 'models', i)}: a {study} study needs models = [names]" + {
                "ensemble": " (the ensemble's members, then the hold-out: at least 2)",
                "ensemble-training": " (the undefended model, the static models, then a held-out source: at least 3)",
            }.get(study, ""))
        eps = _eps_list(m.get("eps"), where, tname, i)
        extra = {"steps": _int(m.get("steps", 10), where, tname, "steps", index=i)}
        if study == "noise":
            extra["maps"] = _int(m.get("maps", 3), where, tname, "maps", minimum=0, index=i)  # cross-sections stored
            extra["gaas_eps"] = _float(m.get("gaas_eps", 2.0), where, tname, "gaas_eps", i)
            extra["max_directions"] = _int(m.get("max_directions", 64), where, tname, "max_directions", index=i)
        if study == "detector":
            extra["fit_n"] = _int(m.get("fit_n", 1000), where, tname, "fit_n", index=i)
        if study == "patch":
            sizes = m.get("sizes", [0.05, 0.1, 0.2])
            if not isinstance(sizes, list) or not sizes or any(not isinstance(v, (int, float)) or not 0 < v <= 1
                                                                 for v in sizes):
                raise SpecError(f"{where.at(tname, 'sizes', i)}: sizes must be a list of patch areas in (0, 1], "
                                f"got {sizes!r}")
            extra["sizes"] = [float(v) for v in sizes]
            extra["target"] = _int(m.get("target", 0), where, tname, "target", minimum=0, index=i)
            extra["steps"] = _int(m.get("steps", 200), where, tname, "steps", index=i)
        if study == "substitute":
            extra.update(seed_n=_int(m.get("seed_n", 150), where, tname, "seed_n", index=i),
                         rounds=_int(m.get("rounds", 4), where, tname, "rounds", index=i),
                         sub_epochs=_int(m.get("sub_epochs", 10), where, tname, "sub_epochs", index=i),
                         architecture=_str(m.get("architecture", "small-cnn"), where, tname, "architecture", i))
        if study in ("ensemble-training", "vat"):
            extra.update(epochs=_int(m.get("epochs", 2), where, tname, "epochs", index=i),
                         architecture=_str(m.get("architecture", "small-cnn" if study != "vat" else "mlp-bn"), where,
                                           tname, "architecture", i),
                         limit=_int(m["limit"], where, tname, "limit", index=i) if "limit" in m else None)
        if study == "bounds":
            extra.update(points=_int(m.get("points", 100), where, tname, "points", index=i),
                         latent_dim=_int(m.get("latent_dim", 10), where, tname, "latent_dim", index=i),
                         vae_epochs=_int(m.get("vae_epochs", 8), where, tname, "vae_epochs", index=i),
                         projected_n=_int(m.get("projected_n", 0), where, tname, "projected_n", minimum=0, index=i),
                         query_budget=_int(m.get("query_budget", 1000), where, tname, "query_budget", index=i),
                         limit=_int(m["limit"], where, tname, "limit", index=i) if "limit" in m else None)
            pairs = m.get("transfer_pairs", [])  # Theorem 3: pairs of the study's model names
            if (not isinstance(pairs, list) or any(not isinstance(p, list) or len(p) != 2 or p[0] == p[1]
                                                   or any(q not in names for q in p) for p in pairs)):
                raise SpecError(f"{where.at(tname, 'transfer_pairs', i)}: transfer_pairs must be a list of pairs of "
                                f"two different names of models = {names!r}, got {pairs!r}")
            if pairs:  # (absent when empty: the cells made before Theorem 3 keep their hashes)
                extra["transfer_pairs"] = [[str(a), str(b)] for a, b in pairs]
            if "projection_steps" in m:  # Theorem 2's Adam steps per projection (absent: 300, the hashes kept)
                extra["projection_steps"] = _int(m["projection_steps"], where, tname, "projection_steps", index=i)
        if study == "vat":
            extra.update(labels=_int(m.get("labels", 1000), where, tname, "labels", index=i),
                         vat_eps=_float(m.get("vat_eps", 2.0), where, tname, "vat_eps", i))
        refs = [_model_ref(n, models, where, tname, "models", i) for n in names]
        groups = [refs] if study in ("ensemble", "ensemble-training", "vat", "bounds") else [[r] for r in refs]
        for group in groups:
            needs = tuple(h for _, nd in group for h in nd)
            who = ", ".join(r.get("name", "?") for r, _ in group)
            for seed in seeds:
                config = {"study": study, "data": data, "eps": eps, "norm": "linf", "seed": seed,
                          "batch_size": batch, **extra}
                if study in ("ensemble", "ensemble-training", "vat", "bounds"):
                    config["models"] = [r for r, _ in group]
                else:
                    config["model"] = group[0][0]
                cells.append(Cell(kind=kind, needs=needs, label=f"{study} {who}", config=config))
        return cells
    if kind == "transfer":
        for key in ("sources", "targets"):
            if not isinstance(m.get(key), list) or not m[key]:
                raise SpecError(f"{where.at(tname, key, i)}: a transfer measurement needs {key} = [model names]")
        attacks = _attacks(m.get("attacks"), where, tname, i, kind=kind)
        # Crafting on the source runs every iteration, as the transfer papers do (Dong et al. 2018,
        # Kurakin et al. 2017): stopping at the first iterate that fools the source (evaluation
        # mode, the robust kind's default) leaves examples just past its boundary, which transfer
        # far less. Written into the config, so the cells made before this rule keep their hashes.
        attacks = [_full_budget(a) for a in attacks]
        eps = _eps_list(m.get("eps"), where, tname, i)
        for s in m["sources"]:
            src, src_needs = _model_ref(s, models, where, tname, "sources", i)
            for t in m["targets"]:
                tgt, tgt_needs = _model_ref(t, models, where, tname, "targets", i)
                for a in attacks:
                    for seed in seeds:
                        cells.append(Cell(kind=kind, needs=src_needs + tgt_needs, label=f"{a['name']} {s}→{t}",
                                          config={"source": src, "model": tgt, "data": data, "attack": a,
                                                  "eps": eps, "norm": norm, "seed": seed, "batch_size": batch}))
        return cells
    names = m.get("models")
    if not isinstance(names, list) or not names:
        raise SpecError(f"{where.at(tname, 'models', i)}: [[measure]] #{i + 1} needs models = [model names]")
    for name in names:
        ref, needs = _model_ref(name, models, where, tname, "models", i)
        base = {"model": ref, "data": data, "norm": norm, "batch_size": batch}
        for seed in seeds:
            if kind == "certify":
                method = m.get("method", "smoothing")
                if method not in ("smoothing", "ibp"):
                    raise SpecError(f"{where.at(tname, 'method', i)}: method must be smoothing or ibp, got {method!r}")
                extra = ({"sigma": _float(m.get("sigma", 0.25), where, tname, "sigma", i),
                          "samples": _int(m.get("samples", 1000), where, tname, "samples", index=i),
                          "alpha": _float(m.get("alpha", 0.001), where, tname, "alpha", i)}
                         if method == "smoothing" else
                         {"steps": _int(m.get("steps", 20), where, tname, "steps", index=i)})
                if method == "smoothing" and not 0 < extra["alpha"] < 1:
                    raise SpecError(f"{where.at(tname, 'alpha', i)}: alpha is a failure probability, strictly "
                                    f"between 0 and 1; got {extra['alpha']}")
                cells.append(Cell(kind=kind, needs=needs, label=f"{method} {name}",
                                  config={**base, "norm": "l2" if method == "smoothing" else "linf",
                                          "method": method, "eps": _eps_list(m.get("eps"), where, tname, i),
                                          "seed": seed, **extra}))
                continue
            if kind == "audit":
                steps = _int(m.get("steps", 20), where, tname, "steps", index=i)
                eps = _eps_list(m.get("eps"), where, tname, i)
                if eps[0] <= 0:
                    raise SpecError(f"{where.at(tname, 'eps', i)}: an audit needs every eps > 0, got {eps}")
                cells.append(Cell(kind=kind, needs=needs, label=f"audit {name}",
                                  config={**base, "eps": eps, "steps": steps, "seed": seed,
                                          "max_points": _int(m.get("max_points", 500), where, tname, "max_points",
                                                             index=i)}))
                continue
            if kind == "strong":
                steps = _int(m.get("steps", 100), where, tname, "steps", index=i)
                version = m.get("version", "fast")
                if version not in ("fast", "standard"):
                    raise SpecError(f"{where.at(tname, 'version', i)}: version must be \"fast\" (APGD-CE, APGD-T) or "
                                    f"\"standard\" (AutoAttack's APGD-CE, APGD-T, FAB-T, Square); got {version!r}")
                cells.append(Cell(kind=kind, needs=needs, label=f"strong {name}",
                                  config={**base, "eps": _eps_list(m.get("eps"), where, tname, i), "steps": steps,
                                          "seed": seed,
                                          # (only when set, so the hashes of the cells before it stay)
                                          **({"version": version} if version != "fast" else {})}))
                continue
            for a in _attacks(m.get("attacks"), where, tname, i, kind=kind):
                config = {**base, "attack": a, "seed": seed}
                if kind == "robust":
                    from advlab.attacks.registry import entry

                    threat = m.get("threat", "black-box" if entry(a["name"]).black_box else "white-box")
                    if threat not in ("white-box", "black-box"):
                        raise SpecError(f"{where.at(tname, 'threat', i)}: threat must be white-box or black-box")
                    if threat == "white-box" and entry(a["name"]).black_box:
                        raise SpecError(f"{where.at(tname, 'attacks', i)}: {a['name']} is a black-box (query) "
                                        "attack but this measurement says threat = \"white-box\"")
                    if threat == "black-box" and not entry(a["name"]).black_box:
                        raise SpecError(f"{where.at(tname, 'attacks', i)}: {a['name']} needs gradients but this "
                                        "measurement says threat = \"black-box\"")
                    sparse = getattr(entry(a["name"]).cls, "norm", None) == "l0"
                    if sparse != (norm == "l0"):
                        raise SpecError(f"{where.at(tname, 'norm', i)}: {a['name']} " + (
                            "counts changed features: it needs norm = \"l0\" (eps then counts features)" if sparse
                            else "steps in an Lp norm; norm = \"l0\" is for the sparse attacks (jsma, pgd-l0)"))
                    config["eps"] = _eps_list(m.get("eps"), where, tname, i)
                    if sparse and any(not float(e).is_integer() for e in config["eps"]):
                        raise SpecError(f"{where.at(tname, 'eps', i)}: an L0 budget is a whole number of features, "
                                        f"got {config['eps']}")
                    config["threat"] = threat
                    if "budget" in m:
                        config["attack"] = {**a, "budget": _int(m["budget"], where, tname, "budget", index=i)}
                cells.append(Cell(kind=kind, needs=needs, label=f"{a['name']} {name}", config=config))
    return cells


def describe_cells(cells: Sequence[Cell], done: set[str] = frozenset()) -> str:  # type: ignore[assignment]
    """The ``--dry-run`` listing: one line per cell, with its hash and whether it is done."""
    lines = []
    for c in cells:
        state = "done" if c.hash in done else "todo"
        lines.append(f"{c.hash}  {state:4s}  {c.kind:8s}  {c.label}")
    return "\n".join(lines)
