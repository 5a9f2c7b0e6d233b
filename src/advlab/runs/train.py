"""``advlab train``: a zoo architecture trained on a dataset, saved with its card."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any


from advlab.models import ModelCard, accuracy, build_seeded, fit, load_card, save

from advlab.runs._common import example_noun, load_data, say

log = logging.getLogger(__name__)


@dataclass
class TrainOutput:
    checkpoint: Path
    card: ModelCard
    history: dict[str, Any]
    dataset: str


def train_job(*, data: str, model: str, out: str | Path, epochs: int = 2, seed: int = 0,
              batch_size: int = 128, lr: float = 1e-3, data_dir: str | None = None,
              download: bool = False, limit: int | None = None, progress: bool = True,
              overwrite: bool = False, quiet: bool = False) -> TrainOutput:
    """Train a zoo architecture on a dataset and save it as a checkpoint with its card."""
    from advlab.models.checkpoint import holds_checkpoint

    if not overwrite and holds_checkpoint(out):
        # checked before the work, not after it; a save a kill interrupted counts once finished
        raise FileExistsError(f"{out} already holds a checkpoint; pass --overwrite (Python: overwrite=True) "
                              "to replace it, or choose another --out")
    train = load_data(data, split="train", data_dir=data_dir, download=download, limit=limit)
    test = load_data(data, split="test", data_dir=data_dir, download=download)
    say(f"training {model} on {train.name} ({len(train)} {example_noun(train)} {tuple(train.input_shape)}, "
         f"{train.num_classes} classes) for {epochs} epoch(s), seed {seed}", quiet)
    net = build_seeded(model, in_shape=tuple(train.input_shape), num_classes=train.num_classes, seed=seed)
    history = fit(net, train.x, train.y, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                  progress=progress, x_val=test.x, y_val=test.y)
    acc = accuracy(net, test.x, test.y)
    card = {"dataset": train.name, "class_names": tuple(train.class_names), "clean_accuracy": acc,
            "seed": seed, "training": {**history.settings, "epochs": epochs, "train_size": len(train),
                                       "data_source": train.source}}
    path = save(net, out, card=card, overwrite=overwrite)
    say(f"test accuracy {100 * acc:.2f}% on {len(test)} {example_noun(test)}; checkpoint written to {path}", quiet)
    return TrainOutput(checkpoint=Path(path), card=load_card(path), history=history.to_dict(),
                       dataset=train.name)
