"""Root pytest configuration: notebook kernels (nbval's and ours) get the
same environment that ``python -m helpers execute-solutions`` used to store
the outputs they are compared with."""

from helpers.execution import apply_kernel_env

apply_kernel_env()
