"""Attack a CartPole policy on its observations (Huang et al., "Adversarial Attacks on Neural
Network Policies", ICLR 2017 workshop) and plot episode return against ε, beside noise.

1. train a small MLP policy by DAgger imitation of a hand-written controller (a few seconds; it
   balances the pole for all 500 steps of CartPole-v1). Huang et al. trained DQN/A3C/TRPO agents
   on Atari; Atari's ROMs cannot be downloaded here, CartPole needs nothing;
2. run episodes in which every observation is replaced by FGSM's or PGD's (untargeted, away from
   the policy's own greedy action) under L∞ and L2, and by random noise of the same norm;
3. write the table (Markdown), the rows (JSON) and the figure (PNG).

Needs the rl extra: ``pip install 'advlab[rl]'``.

Run: ``PYTHONPATH=src python examples/cartpole_attack.py --out cartpole`` (about a minute on one
CPU thread with the defaults).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from advlab.evaluation import policy_return_vs_eps, train_policy
from advlab.reports import policy_return_figure

EPS = {"linf": [0.02, 0.05, 0.1, 0.2, 0.3], "l2": [0.05, 0.1, 0.25, 0.5, 1.0]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("cartpole"), help="folder for the table, JSON and PNG")
    parser.add_argument("--episodes", type=int, default=10, help="episodes per (method, ε)")
    parser.add_argument("--seed", type=int, default=0, help="policy seed and first environment seed")
    parser.add_argument("--pgd-steps", type=int, default=10)
    parser.add_argument("--loss", choices=("ce", "cw"), default="ce",
                        help="the attacks' loss: cross-entropy against the greedy action (Huang et al.) "
                             "or the logit margin")
    args = parser.parse_args(argv)

    policy = train_policy(seed=args.seed)
    curve = policy_return_vs_eps(policy, eps=EPS, episodes=args.episodes, seed=args.seed,
                                 pgd_steps=args.pgd_steps, loss=args.loss, progress=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cartpole_return.md").write_text(curve.table() + "\n", encoding="utf-8")
    (args.out / "cartpole_return.json").write_text(json.dumps(curve.to_dict(), indent=1) + "\n",
                                                   encoding="utf-8")
    policy_return_figure(curve, path=args.out / "cartpole_return.png")
    print(curve.table())
    print(f"wrote {args.out}/cartpole_return.{{md,json,png}}")


if __name__ == "__main__":
    main()
