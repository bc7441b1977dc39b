"""Multinomial logistic regression (L2, LBFGS) in torch: the stacker of ``--method stack``.

Objective (scikit-learn's ``LogisticRegression(C=C)``, multinomial, intercept not penalised):
``0.5 * ||W||² + C * Σ_i −log softmax(x_i Wᵀ + b)[y_i]``. scikit-learn is only a dev dependency, so the fit is
ours; tests/ensemble/test_stacking.py pins it to sklearn.linear_model.LogisticRegression.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def fit_logistic_regression(features: torch.Tensor, targets: torch.Tensor, n_classes: int, C: float = 1.0,
                            max_iter: int = 500, tol: float = 1e-10) -> tuple[torch.Tensor, torch.Tensor]:
    """Fit W [K, F], b [K] on features [N, F] and integer targets [N] (0 ≤ y < K = ``n_classes``).

    Runs in float64 with LBFGS + strong-Wolfe line search. ``C`` is the inverse L2 strength (as in
    scikit-learn). Raises ValueError for empty input, mismatched lengths, labels outside [0, K) or C ≤ 0.
    """
    if features.ndim != 2 or features.shape[0] == 0:
        raise ValueError(f"stacking needs features [N, F] with N > 0, got shape {tuple(features.shape)}")
    if targets.shape != (features.shape[0],):
        raise ValueError(f"targets must be [N] = [{features.shape[0]}], got {tuple(targets.shape)}")
    if not C > 0:
        raise ValueError(f"C (inverse L2 strength) must be > 0, got {C}")
    targets = targets.long()
    if int(targets.min()) < 0 or int(targets.max()) >= n_classes:
        raise ValueError(f"targets must lie in [0, {n_classes}), got {int(targets.min())}..{int(targets.max())}")
    x = features.detach().double()
    n = x.shape[0]
    weight = torch.zeros(n_classes, x.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iter, tolerance_grad=tol,
                                  tolerance_change=tol, history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        # divided by N: the same minimiser as sklearn's objective, better conditioned for LBFGS's tolerances
        loss = (0.5 * weight.pow(2).sum() + C * F.cross_entropy(x @ weight.T + bias, targets, reduction="sum")) / n
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return weight.detach(), bias.detach()


def stack_features(member_log_probs: torch.Tensor) -> torch.Tensor:
    """Member log-probabilities [M, B, C] → stacker features [B, M*C] (member 0's classes first)."""
    m, b, c = member_log_probs.shape
    return member_log_probs.permute(1, 0, 2).reshape(b, m * c)


__all__ = ["fit_logistic_regression", "stack_features"]
