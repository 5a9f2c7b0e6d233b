"""Fawzi et al. (2018) Theorems 1-3 measured on the test suite's setting (issue #13): 8x8 digits, a
VAE with 4 latent dimensions as the generator, the conftest CNN and MLP as classifiers; Theorem 2
on the projected classifiers (30 points), Theorem 3 on the pair (60 points).

    .venv/bin/python bench/bench_fawzi_theorems.py 60 30        # about 9 minutes on 2 cores

Writes bench/results/bounds_theorems.json and bounds_theorems.png; the table is printed (the one
of the run in bench/FAWZI_THEOREMS.md).
"""
import json, sys, time
from pathlib import Path
import torch
from torch import nn
from sklearn.datasets import load_digits
HERE = Path(__file__).resolve().parent
OUT = HERE / "results"
OUT.mkdir(exist_ok=True)
sys.path.insert(0, str(HERE.parent / "tests"))
from conftest import _train, _seeded
from advlab.models.generative import VAE, fit_vae
from advlab.evaluation.theory import bounds_table
from advlab.reports.bounds import bound_cdf_figure
torch.set_num_threads(1)
data = load_digits()
x = torch.tensor(data.images / 16.0, dtype=torch.float32).unsqueeze(1)
y = torch.tensor(data.target, dtype=torch.long)
perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0)); x, y = x[perm], y[perm]
xtr, ytr, xte, yte = x[:1400], y[:1400], x[1400:], y[1400:]
cnn = _train(_seeded(lambda: nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16 * 16, 32), nn.ReLU(), nn.Linear(32, 10)), 1), xtr, ytr, epochs=8, seed=1, lr=3e-3)
mlp = _train(_seeded(lambda: nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10)), 2), xtr, ytr, epochs=15, seed=2, lr=3e-3)
vae = VAE(in_shape=(1, 8, 8), latent_dim=4, hidden=64, seed=0)
fit_vae(vae, xtr, epochs=20, batch_size=64, lr=3e-3, seed=0, progress=False)
vae.eval()
t0 = time.time()
table = bounds_table({"cnn": cnn, "mlp": mlp}, vae.decoder, latent_dim=4, n=int(sys.argv[1]), seed=3,
                     lipschitz_samples=128, test_data=(xte, yte), progress=False,
                     projected=True, projected_n=int(sys.argv[2]),
                     projection={"steps": 200, "restarts": 3, "encoder": lambda xx: vae.encode(xx)[0]},
                     query_budget=1000, transfer=True, delta_samples=20000)
print("seconds", time.time() - t0)
print(table.to_markdown())
table.to_json(str(OUT / "bounds_theorems.json"))
bound_cdf_figure(table, path=OUT / "bounds_theorems.png")
for k, v in table.projected.items():
    print(k, json.dumps(v.summary()))
