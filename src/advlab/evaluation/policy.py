"""Adversarial attacks on policies (Huang, Papernot, Goodfellow, Duan & Abbeel, "Adversarial
Attacks on Neural Network Policies", ICLR 2017 workshop): every observation an agent sees is
perturbed by an attack on its policy network before the agent acts on it, and the episode
return is measured against ε, beside random noise of the same norm.

At each step ``t`` of an episode the policy ``π`` (an ``nn.Module`` mapping an observation
``(B, d)`` to action logits ``(B, A)``) would take ``a_t = argmax π(s_t)``. The attacker
replaces ``s_t`` by

    s'_t = FGSM/PGD(π, s_t, y = a_t)      ‖s'_t − s_t‖_p ≤ ε

an untargeted attack through advlab's normal call with the policy's own greedy action as the
label (Huang et al.'s choice: push the policy away from what it would do), and the agent takes
``argmax π(s'_t)``. The environment itself is not changed: only what the agent sees.

The noise baseline (:class:`ObservationNoise`) has the attack's norm exactly: under L∞ a random
sign on every coordinate, so *every* coordinate moves by the full ε (the largest noise the L∞
ball allows, and more than an L∞ attack needs to spend); under L2 a Gaussian direction scaled to
length ε.

Observations have no natural box. :class:`~advlab.threat.ThreatModel` needs finite bounds, so
the attacks and the noise run in the wide box ``OBS_BOUNDS = (-100, 100)``, which CartPole's
observations never approach (the episode ends at |x| > 2.4, |θ| > 0.21 rad; its velocities stay
within a few units): the box is never active and the threat model is the ε-ball alone. An
observation outside the box raises rather than being clipped. ε is in raw observation units (the
coordinates of CartPole have different scales: cart position in metres, pole angle in radians).

The policy: :func:`train_policy` trains a small MLP by DAgger (Ross, Gordon & Bagnell, AISTATS
2011), imitation of a hand-written linear controller (:func:`cartpole_controller`, return 500
of 500 on CartPole-v1). That is fast (a few seconds on a CPU) and deterministic. Huang et al.
trained DQN, A3C and TRPO agents on Atari games; this is imitation learning, not RL, and Atari's
ROMs cannot be had here (no network, and their licence) — CartPole needs no download.

Determinism: an episode is a chaotic function of the policy's outputs near its decision
boundary, so a change in the last bit of a matrix product (which the number of torch threads
can cause) can change a return. :func:`attack_policy`, :func:`policy_return_vs_eps` and
:func:`train_policy` therefore run with ``threads=1`` by default (set and restored around the
run); ``threads=None`` leaves torch's setting alone. Randomness comes from explicit generators
(``seed``) and environment seeds (``seed + i`` for episode ``i``, the same initial states for
every method and ε: common random numbers); the global RNGs are not touched.

Gymnasium is an optional dependency (``pip install 'advlab[rl]'``), imported only when an
episode is run.

Example:
    >>> policy = train_policy(seed=0)                         # CartPole-v1, DAgger imitation
    >>> attack_policy(policy, FGSM(eps=0.5, norm="l2", bounds=OBS_BOUNDS), episodes=10).mean
    >>> curve = policy_return_vs_eps(policy, eps={"linf": [0.05, 0.1], "l2": [0.25, 0.5]})
    >>> print(curve.table())
"""

from __future__ import annotations

import contextlib
import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from advlab._checks import check_int, check_model, check_number, eval_mode, model_device, warn
from advlab.threat import ThreatModel, canonical_norm, lp_norm, per_sample

#: the box the attacks and the noise run in: wide enough never to bind on CartPole (see the module doc)
OBS_BOUNDS: tuple[float, float] = (-100.0, 100.0)
#: the methods :func:`policy_return_vs_eps` knows
METHODS: tuple[str, ...] = ("fgsm", "pgd", "noise")
RL_EXTRA = "pip install 'advlab[rl]' (or pip install gymnasium)"
#: an attack that leaves more than this fraction of the observations unchanged is warned about
UNMOVED_WARN = 0.05

Expert = Callable[[np.ndarray], np.ndarray]


def _gymnasium() -> Any:
    try:
        import gymnasium
    except ImportError:
        raise ImportError(f"attacks on policies run Gymnasium environments: {RL_EXTRA}") from None
    return gymnasium


@contextlib.contextmanager
def _threads(threads: int | None) -> Iterator[None]:
    """Run with ``threads`` torch threads (restored afterwards); ``None`` leaves them alone."""
    if threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _check_threads(threads: int | None) -> None:
    if threads is not None:
        check_int("threads (or None to leave torch's setting alone)", threads)


def _make_envs(env_id: str, n: int) -> list[Any]:
    gym = _gymnasium()
    if not isinstance(env_id, str):
        raise TypeError(f"env_id must be a Gymnasium environment id such as 'CartPole-v1', got {env_id!r}")
    try:
        envs = [gym.make(env_id) for _ in range(n)]
    except gym.error.Error as exc:
        raise ValueError(f"Gymnasium cannot make {env_id!r}: {exc}. Environments that need no download, "
                         "such as 'CartPole-v1', work; Atari ('ALE/...') needs ale-py and its ROMs") from None
    space, actions = envs[0].observation_space, envs[0].action_space
    if not isinstance(actions, gym.spaces.Discrete):
        raise ValueError(f"{env_id} has actions {actions}; attacks on policies here need a discrete action "
                         "space (the policy's logits are attacked like a classifier's)")
    if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
        raise ValueError(f"{env_id} has observations {space}; a flat vector (a 1-D Box) is needed")
    return envs


# -- the policy -------------------------------------------------------------------------------

def cartpole_controller(obs: np.ndarray) -> np.ndarray:
    """A hand-written linear controller for CartPole: push right when
    ``0.05 x + 0.2 ẋ + θ + 0.5 θ̇ > 0``. It balances the pole for the full 500 steps of
    CartPole-v1 from every initial state we tried; :func:`train_policy`'s expert.

    ``obs`` ``(B, 4)`` (cart position, cart velocity, pole angle, pole angular velocity) ->
    ``(B,)`` int64 actions (0 left, 1 right).
    """
    obs = np.asarray(obs, dtype=np.float64)
    if obs.ndim != 2 or obs.shape[1] != 4:
        raise ValueError(f"cartpole_controller takes CartPole observations of shape (B, 4), got {obs.shape}")
    w = np.array([0.05, 0.2, 1.0, 0.5])
    return (obs @ w > 0).astype(np.int64)


def _mlp(d: int, actions: int, hidden: int, seed: int) -> nn.Module:
    # nn.Linear draws its initial weights from the global RNG: forked, so the caller's is untouched
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(d, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(),
                             nn.Linear(hidden, actions))


def _greedy(policy: nn.Module, obs: np.ndarray) -> np.ndarray:
    p = next(iter(policy.parameters()))
    with torch.no_grad():
        x = torch.as_tensor(obs, dtype=p.dtype, device=p.device)
        return policy(x).argmax(dim=1).cpu().numpy()


def train_policy(*, expert: Expert = cartpole_controller, env_id: str = "CartPole-v1", hidden: int = 32,
                 rounds: int = 4, episodes_per_round: int = 4, epochs: int = 30, lr: float = 1e-2,
                 batch_size: int = 1024, jitter: float = 0.0, copies: int = 2,
                 weight_decay: float = 0.1, label_smoothing: float = 0.0, seed: int = 0,
                 threads: int | None = 1) -> nn.Module:
    """A small MLP policy ``(B, d) -> (B, A)`` logits trained by DAgger on ``expert``'s actions.

    DAgger (Ross et al. 2011): round 0 rolls out the expert; every later round rolls out the
    current network, labels each state it visited with the expert's action and retrains (Adam,
    cross-entropy, minibatches of ``batch_size``) on all the states gathered so far, so the network learns what to
    do in the states its own mistakes lead to. This is imitation, not the RL (DQN, A3C, TRPO) of
    Huang et al. 2017: the attack needs a policy network, not a particular way of training it.

    ``weight_decay`` (AdamW) keeps the logits from growing without bound on these separable
    labels: without it some seeds reach logit margins beyond which cross-entropy's input gradient
    is exactly 0 in float32 at half the states, FGSM cannot move there (:func:`attack_policy`
    warns) and the return under attack may be overstated (bench/POLICY.md). ``label_smoothing``
    is there to show a trap, not to be used: at 0.1 the network's logits level off at a plateau
    (margin log(0.95/0.05) ≈ 2.9) away from its boundary, and FGSM at L2 ε = 0.5 left the return
    at 500 and 356 for two of three seeds where noise of the same norm brought it to about 200
    (false robustness: gradient masking). With ``jitter > 0``, ``copies`` Gaussian copies of every
    visited state (``jitter`` times each coordinate's spread) are labelled by the expert too: the
    network then matches the expert around its trajectories, not only on them, and is more robust
    to random noise (bench/POLICY.md); off by default, plain DAgger.

    Deterministic for a given ``seed`` (initial weights, batches, and environment seeds
    ``10000 (seed + 1) + 100 r + i`` for episode ``i`` of round ``r``: apart from the seeds
    ``0, 1, ...`` the evaluations use, so a policy is measured on initial states it was not
    trained on); the global RNG is not touched. Returns the network in eval mode.

    Example:
        >>> policy = train_policy(seed=0)
        >>> attack_policy(policy, None, episodes=5).mean   # 500.0 on CartPole-v1
    """
    for name, value in (("hidden", hidden), ("rounds", rounds), ("episodes_per_round", episodes_per_round),
                        ("epochs", epochs)):
        check_int(name, value)
    check_int("seed", seed, minimum=0)
    check_int("batch_size", batch_size)
    check_int("copies", copies, minimum=0)
    check_number("jitter", jitter, low=0.0, low_open=False)
    check_number("lr", lr)
    check_number("weight_decay", weight_decay, low=0.0, low_open=False)
    check_number("label_smoothing", label_smoothing, low=0.0, high=1.0, low_open=False, high_open=True)
    _check_threads(threads)
    if not callable(expert):
        raise TypeError(f"expert must map observations (B, d) to actions (B,), got {expert!r}")
    envs = _make_envs(env_id, 1)
    env = envs[0]
    d, n_actions = int(env.observation_space.shape[0]), int(env.action_space.n)
    states: list[np.ndarray] = []
    with _threads(threads):
        policy = _mlp(d, n_actions, hidden, seed)
        opt = torch.optim.AdamW(policy.parameters(), lr=lr, weight_decay=weight_decay)
        g = torch.Generator().manual_seed(seed)
        for r in range(rounds):
            for i in range(episodes_per_round):
                obs, _ = env.reset(seed=10_000 * (seed + 1) + 100 * r + i)
                done = False
                while not done:
                    states.append(np.asarray(obs, dtype=np.float32))
                    act = expert(obs[None]) if r == 0 else _greedy(policy.eval(), obs[None])
                    obs, _, terminated, truncated, _ = env.step(int(act[0]))
                    done = terminated or truncated
            x = torch.as_tensor(np.stack(states))  # (N, d)
            if jitter > 0 and copies > 0:
                # the expert labels any state: label a cloud around the visited ones too, so the
                # network matches it off the thin set of states its trajectories pass through
                spread = x.std(dim=0, keepdim=True).clamp_min(1e-6)
                noise = torch.randn((copies, *x.shape), generator=g) * (jitter * spread)
                x = torch.cat([x, (x + noise).reshape(-1, x.shape[1])])
            y = torch.as_tensor(np.asarray(expert(x.numpy()), dtype=np.int64))
            policy.train()
            for _ in range(epochs):
                order = torch.randperm(len(x), generator=g)
                for batch in order.split(batch_size):
                    opt.zero_grad(set_to_none=True)
                    loss = nn.functional.cross_entropy(policy(x[batch]), y[batch],
                                                       label_smoothing=label_smoothing)
                    loss.backward()
                    opt.step()
    env.close()
    policy.eval()
    for p in policy.parameters():
        p.grad = None
    return policy


# -- the perturbations ------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class ObservationNoise:
    """Random noise of norm exactly ``eps``: the baseline an attack on a policy must beat.

    * L∞: ``δ = ε · s``, ``s`` uniform in ``{−1, +1}^d``: every coordinate moves by the full ε;
    * L2: ``δ = ε · z / ‖z‖_2``, ``z ~ N(0, I)``: a uniformly random direction, length ε.

    The noisy observation is clipped to ``bounds`` (never active with :data:`OBS_BOUNDS`).
    ``__call__(x, *, generator)`` maps ``(B, d)`` to ``(B, d)`` and changes nothing it was given.

    Example:
        >>> noise = ObservationNoise(norm="l2", eps=0.5)
        >>> attack_policy(policy, noise, episodes=10).mean
    """

    eps: float
    norm: str = "linf"
    bounds: tuple[float, float] = OBS_BOUNDS

    def __post_init__(self) -> None:
        norm = canonical_norm(self.norm)
        if norm not in ("linf", "l2"):
            raise ValueError(f"ObservationNoise takes norm linf or l2, got {self.norm!r}")
        threat = ThreatModel(norm=norm, eps=self.eps, bounds=self.bounds)  # checks eps and bounds
        if not math.isfinite(threat.eps):
            raise ValueError(f"ObservationNoise needs a finite eps, got {self.eps!r}")
        object.__setattr__(self, "norm", norm)
        object.__setattr__(self, "eps", threat.eps)
        object.__setattr__(self, "bounds", threat.bounds)

    def __call__(self, x: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        if generator is None:
            generator = torch.Generator(device=x.device).manual_seed(0)
        if self.norm == "linf":
            delta = torch.empty_like(x).bernoulli_(0.5, generator=generator) * 2 - 1
        else:
            z = torch.empty_like(x).normal_(generator=generator)
            delta = z / per_sample(lp_norm(z, "l2").clamp_min(1e-12), z)
        return (x + self.eps * delta).clamp(*self.bounds)


Perturbation = Any  # an advlab attack (called as attack(policy, x, y, generator=g)) or ObservationNoise


def _describe(perturbation: Perturbation) -> tuple[str, str, float]:
    if perturbation is None:
        return "clean", "none", 0.0
    if isinstance(perturbation, ObservationNoise):
        return "noise", perturbation.norm, perturbation.eps
    for name in ("eps", "norm", "bounds"):
        if not hasattr(perturbation, name) or not callable(perturbation):
            raise TypeError("perturbation must be None, an ObservationNoise or an advlab ε-bounded attack "
                            f"(FGSM, PGD, ...) with eps, norm and bounds; got {perturbation!r}")
    return type(perturbation).__name__, canonical_norm(perturbation.norm), float(perturbation.eps)


# -- the results ------------------------------------------------------------------------------

@dataclass(frozen=True)
class PolicyRow:
    """The returns of ``episodes`` episodes with every observation perturbed by one method at one ε.

    ``method`` is the attack's class name (``"FGSM"``, ``"PGD"``), ``"noise"`` or ``"clean"``
    (``norm == "none"``, ``eps == 0``); ``returns`` one per episode, in seed order;
    ``flip_rate`` the fraction of all steps at which the perturbed observation changed the
    policy's greedy action; ``steps`` the total number of steps; ``unmoved`` the fraction of
    steps at which the perturbation left the observation exactly as it was (an attack whose
    gradient is zero there: see :data:`UNMOVED_WARN`).
    """

    method: str
    norm: str
    eps: float
    returns: tuple[float, ...]
    flip_rate: float
    steps: int
    unmoved: float = 0.0

    @property
    def episodes(self) -> int:
        return len(self.returns)

    @property
    def mean(self) -> float:
        """Mean return over the episodes."""
        return float(np.mean(self.returns))

    @property
    def std(self) -> float:
        """Standard deviation of the return over the episodes (``ddof = 1``; 0 for one episode)."""
        return float(np.std(self.returns, ddof=1)) if len(self.returns) > 1 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "norm": self.norm, "eps": self.eps, "mean": self.mean, "std": self.std,
                "episodes": self.episodes, "flip_rate": self.flip_rate, "steps": self.steps,
                "unmoved": self.unmoved,
                "returns": list(self.returns)}


@dataclass(frozen=True)
class PolicyCurve:
    """Episode return against ε for several methods and norms, with the clean return.

    ``rows[0]`` is the clean row; the others follow the order they were run in. ``provenance``
    holds library versions, the code revision, the seed and the settings of the run.
    """

    env_id: str
    episodes: int
    seed: int
    rows: tuple[PolicyRow, ...]
    provenance: Mapping[str, Any] = field(default_factory=dict, compare=False)

    @property
    def clean(self) -> PolicyRow:
        return next(r for r in self.rows if r.method == "clean")

    @property
    def norms(self) -> list[str]:
        return sorted({r.norm for r in self.rows if r.method != "clean"}, key=["linf", "l2"].index)

    def methods(self, norm: str) -> list[str]:
        """The methods run under ``norm``, in the order they were run."""
        norm = canonical_norm(norm)
        return list(dict.fromkeys(r.method for r in self.rows if r.norm == norm))

    def series(self, method: str, norm: str) -> list[PolicyRow]:
        """The rows of one method under one norm, by increasing ε."""
        norm = canonical_norm(norm)
        rows = [r for r in self.rows if r.method == method and r.norm == norm]
        if not rows:
            raise KeyError(f"no rows for method {method!r} under {norm}; have "
                           f"{sorted({(r.method, r.norm) for r in self.rows})}")
        return sorted(rows, key=lambda r: r.eps)

    def row(self, method: str, norm: str, eps: float) -> PolicyRow:
        for r in self.series(method, norm):
            if math.isclose(r.eps, eps, rel_tol=1e-9, abs_tol=1e-12):
                return r
        raise KeyError(f"no row for {method} under {norm} at eps={eps}")

    def table(self) -> str:
        """A Markdown table: one line per (norm, ε), mean ± std return per method, ``N`` episodes."""
        lines = [f"{self.env_id}, {self.episodes} episodes per cell (env seeds {self.seed}..{self.seed + self.episodes - 1}); "
                 f"clean return {self.clean.mean:.1f} ± {self.clean.std:.1f}", ""]
        for norm in self.norms:
            methods = self.methods(norm)
            lines.append("| norm | ε | " + " | ".join(f"{m} return" for m in methods)
                         + " | " + " | ".join(f"{m} flips" for m in methods) + " |")
            lines.append("|---|---:|" + "---:|" * (2 * len(methods)))
            for eps in sorted({r.eps for r in self.rows if r.norm == norm}):
                cells = [self.row(m, norm, eps) for m in methods]
                lines.append(f"| {norm} | {eps:g} | " + " | ".join(f"{c.mean:.1f} ± {c.std:.1f}" for c in cells)
                             + " | " + " | ".join(f"{c.flip_rate:.3f}" for c in cells) + " |")
            lines.append("")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"env_id": self.env_id, "episodes": self.episodes, "seed": self.seed,
                "rows": [r.to_dict() for r in self.rows], "provenance": dict(self.provenance)}


# -- running episodes -------------------------------------------------------------------------

def _check_policy(policy: object) -> tuple[torch.device, torch.dtype]:
    check_model(policy)
    p = next(iter(policy.parameters()), None)  # type: ignore[union-attr]
    if p is None:
        raise ValueError("the policy has no parameters; attacks on it need a network whose logits "
                         "depend on the observation through its weights")
    return model_device(policy) or p.device, p.dtype  # type: ignore[arg-type]


def _run(policy: nn.Module, perturbation: Perturbation, *, env_id: str, episodes: int, seed: int,
         device: torch.device, dtype: torch.dtype) -> PolicyRow:
    method, norm, eps = _describe(perturbation)
    bounds = tuple(getattr(perturbation, "bounds", OBS_BOUNDS))
    envs = _make_envs(env_id, episodes)
    n_actions = int(envs[0].action_space.n)
    obs = [env.reset(seed=seed + i)[0] for i, env in enumerate(envs)]
    alive = list(range(episodes))
    returns = [0.0] * episodes
    steps = flips = unmoved = 0
    g = torch.Generator(device=device).manual_seed(seed)
    try:
        while alive:
            x = torch.as_tensor(np.stack([obs[i] for i in alive]), dtype=dtype, device=device)  # (A, d)
            if not bool(torch.isfinite(x).all()) or float(x.min()) < bounds[0] or float(x.max()) > bounds[1]:
                raise ValueError(f"{env_id} gave an observation outside the box {bounds} the perturbation works "
                                 f"in (values in [{float(x.min()):.4g}, {float(x.max()):.4g}]); pass wider "
                                 "bounds to the attack / ObservationNoise")
            with torch.no_grad(), eval_mode(policy):
                logits = policy(x)
            if logits.dim() != 2 or logits.shape != (len(alive), n_actions):
                raise ValueError(f"the policy must return action logits of shape (B, {n_actions}) for "
                                 f"observations (B, {x.shape[1]}), got {tuple(logits.shape)}")
            greedy = logits.argmax(dim=1)
            if perturbation is None:
                action = greedy
            else:
                if isinstance(perturbation, ObservationNoise):
                    x_seen = perturbation(x, generator=g)
                else:  # an advlab attack, untargeted, away from the action the policy would take
                    x_seen = perturbation(policy, x, greedy, generator=g).x_adv
                with torch.no_grad(), eval_mode(policy):
                    action = policy(x_seen).argmax(dim=1)
                flips += int((action != greedy).sum())
                unmoved += int((x_seen == x).flatten(1).all(dim=1).sum())
            steps += len(alive)
            still = []
            for i, a in zip(alive, action.tolist()):
                obs[i], reward, terminated, truncated, _ = envs[i].step(int(a))
                returns[i] += float(reward)
                if not (terminated or truncated):
                    still.append(i)
            alive = still
    finally:
        for env in envs:
            env.close()
    row = PolicyRow(method=method, norm=norm, eps=eps, returns=tuple(returns),
                    flip_rate=flips / steps if steps else 0.0, steps=steps,
                    unmoved=unmoved / steps if steps else 0.0)
    if perturbation is not None and eps > 0 and row.unmoved > UNMOVED_WARN:
        warn(f"{method} ({norm}, eps={eps:g}) left {row.unmoved:.0%} of the observations exactly unchanged: "
             "its loss has a zero input gradient there, so the return under attack is only an upper bound. "
             "Either the softmax saturates (cross-entropy's gradient is about exp(-margin), exactly 0 in "
             "float32 beyond a logit margin of about 90-100: attack with loss='cw', the logit margin, too) "
             "or the network's own hidden units do (tanh/sigmoid: its Jacobian is 0 there and no gradient "
             "attack moves; try noise of a larger norm, a black-box attack, or train with weight decay)")
    return row


def attack_policy(policy: nn.Module, perturbation: Perturbation, *, env_id: str = "CartPole-v1",
                  episodes: int = 10, seed: int = 0, threads: int | None = 1) -> PolicyRow:
    """Run ``episodes`` episodes of ``env_id`` with every observation perturbed, and their returns.

    ``perturbation`` is ``None`` (clean), an :class:`ObservationNoise`, or an advlab ε-bounded
    attack (``FGSM``, ``PGD``, ... with ``bounds=OBS_BOUNDS``), called at each step as
    ``attack(policy, s, argmax π(s), generator=g)``: untargeted, away from the policy's own
    action (Huang et al. 2017). The agent acts greedily on what it sees. Episodes run side by
    side (one batch per step over the episodes still running); episode ``i`` starts from
    ``env.reset(seed=seed + i)`` and the attacks' and noise's randomness comes from one generator
    seeded with ``seed``. Nothing given is changed (weights, modes, ``requires_grad``, the global
    RNG).

    Example:
        >>> attack_policy(policy, FGSM(eps=0.5, norm="l2", bounds=OBS_BOUNDS), episodes=10).mean
    """
    device, dtype = _check_policy(policy)
    check_int("episodes", episodes)
    check_int("seed", seed, minimum=0)
    _check_threads(threads)
    _describe(perturbation)
    with _threads(threads):
        return _run(policy, perturbation, env_id=env_id, episodes=episodes, seed=seed, device=device, dtype=dtype)


def _eps_grid(eps: Mapping[str, Sequence[float]]) -> dict[str, list[float]]:
    if not isinstance(eps, Mapping) or not eps:
        raise TypeError("eps must map a norm to its radii, e.g. {'linf': [0.05, 0.1], 'l2': [0.25, 0.5]}; "
                        f"got {eps!r}")
    grid: dict[str, list[float]] = {}
    for key, values in eps.items():
        norm = canonical_norm(key)
        if norm not in ("linf", "l2"):
            raise ValueError(f"attacks on policies take norms linf and l2, got {key!r}")
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
            raise TypeError(f"eps[{key!r}] must be a non-empty list of radii, got {values!r}")
        for e in values:
            if isinstance(e, bool) or not isinstance(e, numbers.Real) or not math.isfinite(e) or e <= 0:
                raise ValueError(f"every eps must be a finite number > 0 (the clean return is measured "
                                 f"anyway), got {e!r} under {norm}")
        grid[norm] = sorted(float(e) for e in values)
    return grid


def policy_return_vs_eps(policy: nn.Module, *, eps: Mapping[str, Sequence[float]],
                         methods: Sequence[str] = METHODS, env_id: str = "CartPole-v1", episodes: int = 10,
                         seed: int = 0, pgd_steps: int = 10, loss: str = "ce",
                         bounds: tuple[float, float] = OBS_BOUNDS, threads: int | None = 1,
                         progress: bool = False) -> PolicyCurve:
    """Episode return against ε: each of ``methods`` under each norm of ``eps``, and the clean return.

    ``methods`` from :data:`METHODS`: ``"fgsm"`` (:class:`~advlab.attacks.FGSM`, the one-step
    attack of Huang et al.; FGM under L2), ``"pgd"`` (:class:`~advlab.attacks.PGD`,
    ``pgd_steps`` steps, random start) and ``"noise"`` (:class:`ObservationNoise` of the same
    norm and ε). ``loss`` is the attacks' loss: ``"ce"`` (Huang et al.'s cross-entropy against
    the greedy action) or ``"cw"`` (the logit margin, which does not saturate on an over-confident
    policy). Every cell runs the same ``episodes`` environment seeds. All inputs are checked
    before the first episode (the attack configurations are built first).

    Example:
        >>> curve = policy_return_vs_eps(policy, eps={"linf": [0.05, 0.1], "l2": [0.25, 0.5]})
        >>> curve.row("FGSM", "l2", 0.5).mean, curve.row("noise", "l2", 0.5).mean
    """
    from advlab.attacks import FGSM, PGD
    from advlab.evaluation.robustness import provenance

    device, dtype = _check_policy(policy)
    grid = _eps_grid(eps)
    if isinstance(methods, str) or not methods:
        raise TypeError(f"methods must be a non-empty list drawn from {METHODS}, got {methods!r}")
    chosen = [str(m).lower() for m in methods]
    unknown = [m for m in chosen if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}: use {', '.join(METHODS)}")
    check_int("episodes", episodes)
    check_int("seed", seed, minimum=0)
    check_int("pgd_steps", pgd_steps)
    _check_threads(threads)

    def make(method: str, norm: str, e: float) -> Perturbation:
        if method == "fgsm":
            return FGSM(eps=e, norm=norm, loss=loss, bounds=bounds)
        if method == "pgd":
            return PGD(eps=e, norm=norm, steps=pgd_steps, loss=loss, bounds=bounds)
        return ObservationNoise(eps=e, norm=norm, bounds=bounds)

    if loss not in ("ce", "cw"):
        raise ValueError(f"loss must be 'ce' or 'cw' for attacks on policies, got {loss!r}")
    cells = [make(m, norm, e) for norm, values in grid.items() for m in chosen for e in values]
    from tqdm.auto import tqdm

    run = dict(env_id=env_id, episodes=episodes, seed=seed, device=device, dtype=dtype)
    with _threads(threads):
        rows = [_run(policy, None, **run)]  # type: ignore[arg-type]
        for cell in tqdm(cells, desc="policy return vs eps", disable=not progress, leave=False):
            rows.append(_run(policy, cell, **run))  # type: ignore[arg-type]
    info = provenance(env_id=env_id, episodes=episodes, seed=seed, pgd_steps=pgd_steps, loss=loss,
                      bounds=list(bounds),
                      threads=threads, methods=chosen, eps={k: v for k, v in grid.items()},
                      gymnasium=_gymnasium().__version__)
    return PolicyCurve(env_id=env_id, episodes=episodes, seed=seed, rows=tuple(rows), provenance=info)


__all__ = ["METHODS", "OBS_BOUNDS", "ObservationNoise", "PolicyCurve", "PolicyRow", "attack_policy",
           "cartpole_controller", "policy_return_vs_eps", "train_policy"]
