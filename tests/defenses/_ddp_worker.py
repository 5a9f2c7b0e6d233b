"""Worker for the data-parallel test: run under ``python -m torch.distributed.run --nproc_per_node=2``.

Trains the same tiny model as the test's single-process run, with the unchanged user code
(``train(...)`` knows nothing about ranks), and writes each rank's final weights and history.

    python -m torch.distributed.run --nproc_per_node=2 --standalone _ddp_worker.py OUT_DIR
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from sklearn.datasets import load_digits

from advlab.defenses.adversarial import FastFGSM
from advlab.defenses.recipe import Standard
from advlab.defenses.training import train
from advlab.models import build_seeded

NUM_SAMPLES = 200  # 3 batches of 64 and a last one of 8, split 4 + 4 over the two ranks
BATCH_SIZE = 64


def data() -> tuple[torch.Tensor, torch.Tensor]:
    digits = load_digits()
    x = torch.tensor(digits.images[:NUM_SAMPLES] / 16.0, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(digits.target[:NUM_SAMPLES], dtype=torch.long)
    return x, y


def model() -> torch.nn.Module:
    return build_seeded("mlp", in_shape=(1, 8, 8), num_classes=10, seed=0)


RECIPES = {"standard": Standard(), "fast": FastFGSM(eps=0.1)}


def main() -> None:
    torch.set_num_threads(1)
    x, y = data()
    rank = int(os.environ["RANK"])
    for name, recipe in RECIPES.items():
        out = Path(sys.argv[1]) / name
        out.mkdir(parents=True, exist_ok=True)
        net = model()
        result = train(net, recipe, x, y, epochs=1, batch_size=BATCH_SIZE, seed=0, progress=False,
                       checkpoint_dir=out / "ckpt")
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(out / f"rank{rank}.safetensors"))
        (out / f"rank{rank}.json").write_text(json.dumps(result.to_dict()))


if __name__ == "__main__":
    main()
