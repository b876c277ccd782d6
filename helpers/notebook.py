"""Set-up shared by every lesson: seeding, default dtype, plot style, device.

The set-up cell of a lesson calls :func:`setup_notebook` once, so that a run
from a fresh kernel gives the same numbers every time.
"""

import random
from pathlib import Path

import numpy as np
import torch

__all__ = ["setup_notebook", "default_device", "STYLE_FILE"]

STYLE_FILE = Path(__file__).with_name("course.mplstyle")


def setup_notebook(seed=0, dtype=torch.float32):
    """Seed Python, NumPy and PyTorch; set the default dtype, one CPU thread and the plot style.

    Parameters
    ----------
    seed : int. Seeds ``random``, ``numpy.random`` and ``torch`` (all devices).
    dtype : torch.dtype. ``torch.float64`` where a lesson checks identities to
        round-off; ``torch.float32`` (the default) for networks.
    """
    import matplotlib.pyplot as plt

    if not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_default_dtype(dtype)
    # One CPU thread: a sum split across threads rounds differently, and training amplifies round-off, so
    # numbers would depend on the machine's core count. The course's models are too small to gain from more.
    torch.set_num_threads(1)
    plt.style.use(STYLE_FILE)


def default_device():
    """CUDA when present, else the CPU: lessons run on either and agree within tolerance."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
