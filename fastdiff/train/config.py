"""`TrainConfig`: the hyperparameters of a training run, checked when made (a checkpoint stores them as a dict)."""

from __future__ import annotations

import dataclasses
import math

from fastdiff.validation import check_number, check_positive, check_positive_int

LOSSES = ("dsm", "cdm")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of a run. `batch_size` is the global batch (summed over ranks)."""

    steps: int = 2000
    batch_size: int = 256
    lr: float = 1e-3
    loss: str = "dsm"
    lambda_cp: float = 10.0
    ema_decay: float = 0.999
    seed: int = 0
    P_mean: float = -1.2
    P_std: float = 1.2

    def __post_init__(self):
        check_positive_int(self.steps, "steps")
        check_positive_int(self.batch_size, "batch_size")
        check_positive_int(self.seed, "seed", minimum=0)
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        check_positive(self.lr, "lr")
        check_number(self.lambda_cp, "lambda_cp")
        check_number(self.P_mean, "P_mean", -math.inf)
        check_positive(self.P_std, "P_std")
        if check_number(self.ema_decay, "ema_decay", 0.0, 1.0) == 1:
            raise ValueError(f"ema_decay must be a number in [0, 1), got {self.ema_decay!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
