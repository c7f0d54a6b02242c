"""Training denoisers: EDM denoising score matching, the CDM consistency loss, a DDP-ready training loop with EMA and
checkpoints, data that needs no download, and sampling split over ranks. TDC lives in the subpackage
`fastdiff.train.tdc` (import it as such)."""

from fastdiff.train import networks
from fastdiff.train.checkpoint import CheckpointError, load_checkpoint
from fastdiff.train.config import TrainConfig
from fastdiff.train.data import MixtureData, TensorData, TrainData, load_digits, toy_mixture
from fastdiff.train.distributed import sample_distributed
from fastdiff.train.loop import DivergenceError, Trainer, ema_update, write_log
from fastdiff.train.losses import cdm_loss, consistency_loss, dsm_loss, edm_weight

__all__ = [
    "CheckpointError",
    "DivergenceError",
    "MixtureData",
    "TensorData",
    "TrainConfig",
    "TrainData",
    "Trainer",
    "cdm_loss",
    "consistency_loss",
    "dsm_loss",
    "edm_weight",
    "ema_update",
    "load_checkpoint",
    "load_digits",
    "networks",
    "sample_distributed",
    "toy_mixture",
    "write_log",
]
