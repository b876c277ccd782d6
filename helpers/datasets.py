"""Offline datasets that ship with the course, each checked against its SHA-256.

Provenance and licences: ``helpers/data/README.md``. Nothing here touches the
network; a missing or altered file raises an error that says how to restore it.
"""

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = ["DATA_DIR", "Split", "DigitsSplit", "load_breast_cancer", "load_digits"]

DATA_DIR = Path(__file__).with_name("data")

_SHA256 = {
    "breast_cancer.csv": "fed3eb72d0575ef6192293f5093c6e801b1476b577d0386bf4455504522172ed",
    "digits.csv.gz": "09f66e6debdee2cd2b5ae59e0d6abbb73fc2b0e0185d2e1957e9ebb51e23aa22",
}


def _verified_path(name):
    path = DATA_DIR / name
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing; it ships with the course repository (restore it with `git checkout -- helpers/data`)."
        )
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != _SHA256[name]:
        raise ValueError(
            f"{path} has SHA-256 {digest}, expected {_SHA256[name]}: the file was changed. "
            "Restore it with `git checkout -- helpers/data`."
        )
    return path


@dataclass(frozen=True)
class Split:
    """A train/test split: inputs ``(N, D)`` and binary labels ``(N,)`` as float tensors."""

    X_train: torch.Tensor
    y_train: torch.Tensor
    X_test: torch.Tensor
    y_test: torch.Tensor
    feature_names: tuple


_BC_FEATURES = (
    "radius",
    "texture",
    "perimeter",
    "area",
    "smoothness",
    "compactness",
    "concavity",
    "concave points",
    "symmetry",
    "fractal dimension",
)


def load_breast_cancer(dtype=None, intercept=True):
    r"""Breast Cancer Wisconsin (Diagnostic): 569 tumours, 30 features, y = 1 for malignant.

    The split is fixed: rows 0, 4, 8, ... (143) are the test set, the other
    426 the training set. Features are standardised with the *training*
    mean and standard deviation (so no test information leaks into them).

    Parameters
    ----------
    dtype : torch dtype, default ``torch.get_default_dtype()``.
    intercept : bool. Prepend a column of ones, so ``D = 31`` and the first
        weight is the intercept.

    Returns
    -------
    :class:`Split` with ``X_train (426, D)``, ``y_train (426,)``,
    ``X_test (143, D)``, ``y_test (143,)`` and the feature names.

    References
    ----------
    Street, W. N., Wolberg, W. H. & Mangasarian, O. L. Nuclear feature
    extraction for breast tumor diagnosis (1993). UCI ML Repository, dataset 17.
    """
    dtype = dtype or torch.get_default_dtype()
    raw = np.loadtxt(_verified_path("breast_cancer.csv"), delimiter=",", skiprows=1)
    features, benign = raw[:, :30], raw[:, 30]
    y = 1.0 - benign  # 1 = malignant
    test = np.arange(len(y)) % 4 == 0
    mean, std = features[~test].mean(0), features[~test].std(0)
    X = (features - mean) / std
    names = tuple(f"{kind} {f}" for kind in ("mean", "se", "worst") for f in _BC_FEATURES)
    if intercept:
        X = np.concatenate([np.ones((len(y), 1)), X], axis=1)
        names = ("intercept",) + names
    X, y = torch.as_tensor(X, dtype=dtype), torch.as_tensor(y, dtype=dtype)
    return Split(X[~test], y[~test], X[test], y[test], names)


@dataclass(frozen=True)
class DigitsSplit:
    """Digit images ``(N, 64)`` with pixel counts 0..16 (floats) and labels ``(N,)`` (int64), per split."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def load_digits(dtype=None):
    r"""The UCI optical handwritten digits (scikit-learn's ``load_digits``): 1797 images, 8x8, values 0..16.

    The split is fixed by row index: ``i % 10 == 0`` test (180 images),
    ``i % 10 == 1`` validation (180), the rest training (1437). Pixels are
    kept as counts, so that a Binomial(16, p) likelihood applies; reshape a
    row to ``(8, 8)`` to see the image.

    References
    ----------
    Alpaydin, E. & Kaynak, C. Cascading classifiers. Kybernetika 34 (1998). UCI ML Repository, dataset 80.
    """
    dtype = dtype or torch.get_default_dtype()
    raw = np.loadtxt(_verified_path("digits.csv.gz"), delimiter=",")
    x = torch.as_tensor(raw[:, :64], dtype=dtype)
    y = torch.as_tensor(raw[:, 64], dtype=torch.int64)
    fold = torch.arange(len(y)) % 10
    test, val = fold == 0, fold == 1
    train = ~(test | val)
    return DigitsSplit(x[train], y[train], x[val], y[val], x[test], y[test])
