"""The shipped datasets load offline, with the documented split, and a changed file is refused."""

import shutil

import pytest
import torch

from helpers import datasets


def test_breast_cancer_split_and_standardisation():
    d = datasets.load_breast_cancer(dtype=torch.float64)
    assert d.X_train.shape == (426, 31) and d.X_test.shape == (143, 31)
    assert int(d.y_train.sum() + d.y_test.sum()) == 212  # malignant cases, per the UCI description
    assert torch.equal(d.X_train[:, 0], torch.ones(426, dtype=torch.float64))
    torch.testing.assert_close(d.X_train[:, 1:].mean(0), torch.zeros(30, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(d.X_train[:, 1:].std(0, correction=0), torch.ones(30, dtype=torch.float64))
    assert d.feature_names[:2] == ("intercept", "mean radius") and len(d.feature_names) == 31
    no_intercept = datasets.load_breast_cancer(intercept=False)
    assert no_intercept.X_train.shape == (426, 30) and no_intercept.X_train.dtype == torch.get_default_dtype()


def test_changed_or_missing_file_is_refused(tmp_path, monkeypatch):
    shutil.copy(datasets.DATA_DIR / "breast_cancer.csv", tmp_path / "breast_cancer.csv")
    monkeypatch.setattr(datasets, "DATA_DIR", tmp_path)
    with open(tmp_path / "breast_cancer.csv", "a") as fh:
        fh.write("0\n")
    with pytest.raises(ValueError, match="git checkout -- helpers/data"):
        datasets.load_breast_cancer()
    (tmp_path / "breast_cancer.csv").unlink()
    with pytest.raises(FileNotFoundError, match="ships with the course"):
        datasets.load_breast_cancer()


def test_digits_split_values_and_labels():
    d = datasets.load_digits(dtype=torch.float64)
    assert d.x_train.shape == (1437, 64) and d.x_val.shape == (180, 64) and d.x_test.shape == (180, 64)
    for x in (d.x_train, d.x_val, d.x_test):
        assert x.min() == 0 and x.max() == 16 and torch.equal(x, x.round())
    labels = torch.cat([d.y_train, d.y_val, d.y_test])
    assert labels.dtype == torch.int64 and set(labels.tolist()) == set(range(10))
    assert torch.bincount(labels).min() >= 170  # about 180 of each digit, as UCI describes
    # the first image in the file is a zero, and it is the first test image (index 0)
    assert int(d.y_test[0]) == 0 and d.x_test[0].reshape(8, 8)[0, 2] == 5
