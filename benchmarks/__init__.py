"""Benchmarks: the course's own code against Pyro, and every solution notebook's run time.

Run from the top of the repository as ``python -m benchmarks`` (``--help`` for options). Nothing here is
imported by the lessons or the tests; the README's lesson-map times come from the notebook table.
"""
