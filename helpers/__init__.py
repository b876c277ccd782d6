"""Helpers for the variational-inference course.

The lessons teach; this package holds what they reuse: models with exact
answers (:mod:`helpers.conjugate`), Gaussian closed forms
(:mod:`helpers.gaussian`), Monte Carlo bounds (:mod:`helpers.estimators`),
notebook set-up and plotting, the exercise checkers (:mod:`helpers.checks`)
and the course tooling behind ``python -m helpers``.
"""

__version__ = "0.1.0"
