"""Pretraining and evaluation: the loop (:func:`pretrain`), atomic checkpoints, the
evaluation protocols (linear probe, weighted kNN, fine-tuning) and the label-efficiency study."""

from pyssl.train.checkpoint import CheckpointError
from pyssl.train.evaluate import (
    features,
    knn_accuracy,
    label_subset,
    logistic_regression,
    train_classifier,
)
from pyssl.train.loop import PretrainConfig, batch_rows, pretrain, resolve_precision
from pyssl.train.optim import LARS, cosine_lr, default_lr, make_optimizer
from pyssl.train.study import FRACTIONS, label_efficiency

__all__ = [
    "FRACTIONS",
    "LARS",
    "CheckpointError",
    "PretrainConfig",
    "batch_rows",
    "cosine_lr",
    "default_lr",
    "features",
    "knn_accuracy",
    "label_efficiency",
    "label_subset",
    "logistic_regression",
    "make_optimizer",
    "pretrain",
    "resolve_precision",
    "train_classifier",
]
