"""LD3's soft objective: the student may start from x_T' anywhere in the ball ||x_T' - x_T|| <= r sigma_T around the
teacher's noise x_T (r = 0.001 d / NFE^2 by default), which relaxes the fit where the grid cannot match exactly.

Per training sample x_T' moves by a projected gradient step (the steepest-descent step of the ball's radius on
the same loss), and the move is kept only where that sample's loss fell (checked with the updated grid).
"""

from __future__ import annotations

import torch


def default_radius(dim: int, nfe: int) -> float:
    """LD3's r = 0.001 d / NFE^2 (in units of sigma_T)."""
    return 0.001 * dim / nfe**2


class SlackNoise:
    def __init__(self, anchors: torch.Tensor, radius: float):
        self.anchors = anchors
        self.current = anchors.clone()
        self.radius = radius
        self.accepted = 0

    def batch(self, idx: torch.Tensor) -> torch.Tensor:
        """The current x_T' of the samples `idx`, requiring grad when there is slack."""
        return self.current[idx].clone().requires_grad_(self.radius > 0)

    def propose(self, idx: torch.Tensor, x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """x - radius g/|g| per sample, projected back into the ball around the anchors."""
        flat = grad.flatten(1)
        step = flat / flat.norm(dim=1, keepdim=True).clamp_min(torch.finfo(flat.dtype).tiny)
        moved = x.detach() - self.radius * step.view_as(x)
        offset = (moved - self.anchors[idx]).flatten(1)
        scale = (self.radius / offset.norm(dim=1).clamp_min(torch.finfo(offset.dtype).tiny)).clamp(max=1.0)
        return self.anchors[idx] + (offset * scale[:, None]).view_as(x)

    def accept(self, idx: torch.Tensor, candidate: torch.Tensor, old_loss: torch.Tensor, new_loss: torch.Tensor) -> None:
        better = new_loss < old_loss
        self.current[idx[better]] = candidate[better]
        self.accepted += int(better.sum())
