"""Data layer: the embedded default data set (scikit-learn digits) and user data sets (CIFAR, ImageFolder)."""

from hwnas.data.datasets import SPLITS, DataSplits, load_dataset

__all__ = ["SPLITS", "DataSplits", "load_dataset"]
