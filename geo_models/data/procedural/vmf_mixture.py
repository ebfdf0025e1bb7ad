"""Conditional distributions on S² with a known density: a von Mises-Fisher mixture per condition.

A test bed for density models of locations (issue 5's synthetic acceptance): condition ``c`` (one of
``num_conditions``, given to a model as the one-hot embedding ``e_c``) selects a mixture of ``num_components``
von Mises-Fisher components with seeded means (uniform on the sphere), concentrations (uniform in
``kappa_range``) and weights (Dirichlet(2)). Everything is exact: samples (Wood's inversion), log-densities w.r.t.
area on the unit sphere (uniform = 1 / 4 pi, as :class:`~geo_models.flow.SphereFlowPipeline` reports them), and a
Monte-Carlo estimate of each condition's entropy ``H(c) = -E[log p(x | c)]``.

Example:
    >>> task = VMFMixtureTask(num_conditions=3, num_components=2, seed=0)
    >>> cond, xyz = task.sample(4, generator=torch.Generator().manual_seed(0))
    >>> task.embeddings(cond).shape, xyz.shape, task.log_prob(xyz, cond).shape
    (torch.Size([4, 3]), torch.Size([4, 3]), torch.Size([4]))
"""

from __future__ import annotations

import math

import torch

from geo_models.sphere import uniform_sphere_xyz, von_mises_fisher_log_prob, von_mises_fisher_xyz

__all__ = ["VMFMixtureTask", "sphere_mmd_test"]


class VMFMixtureTask:
    """Condition-dependent vMF mixtures on S² with exact samples, densities and (Monte-Carlo) entropies.

    Args:
        num_conditions: number of conditions C (the embedding width: conditions are one-hot).
        num_components: vMF components K per condition.
        kappa_range: concentrations drawn uniformly in ``[low, high]`` (kappa 10-50: caps of ~8-18 degrees).
        seed: seeds the means, concentrations and weights.

    Attributes:
        means: ``(C, K, 3)`` float64 unit vectors. kappas: ``(C, K)``. weights: ``(C, K)``, rows sum to 1.
    """

    def __init__(
        self,
        num_conditions: int = 3,
        num_components: int = 3,
        *,
        kappa_range: tuple[float, float] = (10.0, 50.0),
        seed: int = 0,
    ):
        for name, value in (("num_conditions", num_conditions), ("num_components", num_components)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        low, high = (float(k) for k in kappa_range)
        if not 0 < low <= high:
            raise ValueError(f"kappa_range must be (low, high) with 0 < low <= high, got {kappa_range!r}")
        g = torch.Generator().manual_seed(int(seed))
        c, k = num_conditions, num_components
        self.num_conditions, self.num_components = c, k
        self.means = uniform_sphere_xyz(c * k, generator=g, dtype=torch.float64).view(c, k, 3)
        self.kappas = low + (high - low) * torch.rand(c, k, generator=g, dtype=torch.float64)
        gam = torch.distributions.Gamma(torch.full((c, k), 2.0, dtype=torch.float64), 1.0)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            w = gam.sample()
        self.weights = w / w.sum(dim=1, keepdim=True)

    @property
    def embedding_dim(self) -> int:
        return self.num_conditions

    def _check_cond(self, cond) -> torch.Tensor:
        cond = torch.as_tensor(cond, dtype=torch.long)
        if cond.ndim != 1 or (cond.numel() and (cond.min() < 0 or cond.max() >= self.num_conditions)):
            raise ValueError(f"cond must be a 1-d tensor of integers in [0, {self.num_conditions}), got {cond}")
        return cond

    def embeddings(self, cond) -> torch.Tensor:
        """``(N,)`` condition indices -> ``(N, C)`` float32 one-hot embeddings (a model's ``image_embeddings``)."""
        cond = self._check_cond(cond)
        return torch.nn.functional.one_hot(cond, self.num_conditions).float()

    def sample(
        self, num_samples: int, *, cond=None, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``num_samples`` pairs -> ``(cond (N,), xyz (N, 3) float32)``; conditions uniform unless ``cond`` (N,)
        fixes them."""
        n = int(num_samples)
        if cond is None:
            cond = torch.randint(self.num_conditions, (n,), generator=generator)
        cond = self._check_cond(cond)
        if len(cond) != n:
            raise ValueError(f"cond has {len(cond)} rows for num_samples={n}")
        comp = torch.multinomial(self.weights[cond], 1, generator=generator)[:, 0] if n else cond
        # one vMF draw per row around its component's mean (von_mises_fisher_xyz broadcasts over rows)
        x = von_mises_fisher_xyz(self.means[cond, comp], self.kappas[cond, comp], 1, generator=generator)[:, 0]
        return cond, x.float()

    def log_prob(self, xyz: torch.Tensor, cond) -> torch.Tensor:
        """Exact ``log p(x | c)`` (nats, w.r.t. area on the unit sphere) of unit vectors ``xyz (N, 3)`` -> ``(N,)``
        float64."""
        cond = self._check_cond(cond)
        x = torch.as_tensor(xyz).double()
        if x.ndim != 2 or x.shape[1] != 3 or len(x) != len(cond):
            raise ValueError(f"xyz must have shape ({len(cond)}, 3), got {tuple(x.shape)}")
        x = x / x.norm(dim=-1, keepdim=True)
        comp = von_mises_fisher_log_prob(x[:, None], self.means[cond], self.kappas[cond])  # (N, K)
        return torch.logsumexp(comp + self.weights[cond].log(), dim=1)

    def entropy(self, *, num_samples: int = 200_000, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Monte-Carlo entropy per condition ``H(c) = -E[log p(x | c)]`` -> ``(H (C,), standard error (C,))``."""
        g = torch.Generator().manual_seed(int(seed))
        h, se = [], []
        for c in range(self.num_conditions):
            cond = torch.full((int(num_samples),), c)
            _, x = self.sample(int(num_samples), cond=cond, generator=g)
            nll = -self.log_prob(x, cond)
            h.append(nll.mean())
            se.append(nll.std() / math.sqrt(len(nll)))
        return torch.stack(h), torch.stack(se)


def sphere_mmd_test(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    cond_x: torch.Tensor | None = None,
    cond_y: torch.Tensor | None = None,
    kappa: float | None = None,
    num_permutations: int = 500,
    seed: int = 0,
) -> tuple[float, float]:
    """Two-sample test of ``x (N, 3)`` against ``y (M, 3)`` (unit vectors) by the MMD with the vMF kernel
    ``k(a, b) = exp(kappa (<a, b> - 1))`` -> ``(MMD² (biased V-statistic), permutation p-value)``.

    With conditions ``cond_x (N,)``, ``cond_y (M,)`` the kernel is multiplied by ``[c == c']``: a test of the joint
    distributions of (condition, location), i.e. of all conditionals at once when both sides share the condition
    frequencies. ``kappa`` defaults to the median heuristic ``1 / median(1 - <a, b>)`` over the pooled points (a
    kernel as wide as the whole point cloud: weak against changes of concentration; pass the data's scale). The
    p-value is ``(1 + #{perm MMD² >= observed}) / (1 + num_permutations)``.
    """
    pts = torch.cat([torch.as_tensor(x), torch.as_tensor(y)]).double()
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise ValueError(f"x and y must have shape (N, 3), got {tuple(x.shape)} and {tuple(y.shape)}")
    n = len(x)
    gram = pts @ pts.T
    if kappa is None:
        off = (1 - gram)[~torch.eye(len(pts), dtype=torch.bool)]
        kappa = 1.0 / float(off.median().clamp_min(1e-12))
    kern = torch.exp(kappa * (gram - 1))
    if cond_x is not None or cond_y is not None:
        if cond_x is None or cond_y is None:
            raise ValueError("pass both cond_x and cond_y, or neither")
        c = torch.cat([torch.as_tensor(cond_x), torch.as_tensor(cond_y)])
        kern = kern * (c[:, None] == c[None, :])

    def mmd2(labels: torch.Tensor) -> float:
        a = labels.double() / n
        b = (~labels).double() / (len(pts) - n)
        d = a - b
        return float(d @ kern @ d)

    labels = torch.arange(len(pts)) < n
    observed = mmd2(labels)
    g = torch.Generator().manual_seed(int(seed))
    count = sum(mmd2(labels[torch.randperm(len(pts), generator=g)]) >= observed for _ in range(num_permutations))
    return observed, (1 + count) / (1 + num_permutations)
