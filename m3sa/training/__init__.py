"""Training (paper section 4.1), one concern per module, read top-down:

- :mod:`~m3sa.training.loop`: ``train_all`` -> ``train`` (one seed): epochs, validation on the
  valid split, early stopping, checkpoints, the collapse check;
- :mod:`~m3sa.training.step`: the two-phase step of one batch (eq. 4-13), the ``Trainer``;
- :mod:`~m3sa.training.optim`: optimizers by owning module and the lr schedule;
- :mod:`~m3sa.training.resume`: the run's state and when ``last.pt`` may be resumed;
- :mod:`~m3sa.training.data`: the tokenised train and valid splits;
- :mod:`~m3sa.training.curves`: dvclive curves.

Device, processes and threads come from :mod:`m3sa.runtime`.
"""

from m3sa.runtime import Runtime, distributed_runtime, torch_settings
from m3sa.training.data import TrainingData, load_training_data
from m3sa.training.loop import epoch_seed, hold_unused_rows, train, train_all
from m3sa.training.optim import build_optimizer, lr_factor, set_lr
from m3sa.training.resume import RESUME_FREE_KEYS, TrainState, data_identity, resume_digest
from m3sa.training.step import Trainer

__all__ = [
    "RESUME_FREE_KEYS",
    "Runtime",
    "TrainState",
    "Trainer",
    "TrainingData",
    "build_optimizer",
    "data_identity",
    "distributed_runtime",
    "epoch_seed",
    "hold_unused_rows",
    "load_training_data",
    "lr_factor",
    "resume_digest",
    "set_lr",
    "torch_settings",
    "train",
    "train_all",
]
