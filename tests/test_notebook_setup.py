"""helpers.notebook: seeding, dtype, style and device selection."""

import pytest
import torch

from helpers.notebook import STYLE_FILE, default_device, setup_notebook


def test_setup_seeds_and_sets_dtype():
    threads = torch.get_num_threads()
    try:
        setup_notebook(seed=7, dtype=torch.float64)
        first = torch.rand(3)
        assert first.dtype == torch.float64
        assert torch.get_num_threads() == 1  # numbers must not depend on the core count
        setup_notebook(seed=7, dtype=torch.float64)
        assert torch.equal(torch.rand(3), first)
    finally:
        torch.set_default_dtype(torch.float32)
        torch.set_num_threads(threads)
    assert STYLE_FILE.exists()


def test_setup_rejects_a_non_integer_seed():
    with pytest.raises(TypeError, match="seed must be an int"):
        setup_notebook(seed="0")


def test_default_device_follows_cuda_availability(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert default_device() == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert default_device() == torch.device("cuda")
