"""Data layer: the embedded default data set (scikit-learn digits) and user data sets (CIFAR, ImageFolder)."""

from hwnas.data.datasets import DataSplits, load_dataset

__all__ = ["DataSplits", "load_dataset"]
