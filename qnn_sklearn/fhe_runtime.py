"""concrete-python's ``fhe`` module, imported so that it keeps the process's exit status.

Every qnn_sklearn module imports ``fhe`` from here, never from ``concrete`` directly.

Why: importing ``concrete.compiler`` registers ``_terminate_df_parallelization`` with Python's
``atexit``. That function calls the runtime's ``_dfr_terminate()``, which, once the runtime has
been started (by the first key generation or circuit run), shuts down its HPX thread pool and
then calls the C library's ``exit(0)``. Python runs ``atexit`` hooks inside ``Py_FinalizeEx``,
after ``sys.exit(3)`` or a failing pytest session has already chosen a status but before the
interpreter hands it to the operating system, so the nested ``exit(0)`` wins: every script,
pytest run and CI job that had run a circuit exited 0, whatever it asked for (seen in gdb:
``Py_Exit(3) → atexit_callfuncs → _dfr_terminate → exit(0)``).

The hook only matters for circuits compiled with ``dataflow_parallelize=True``, whose HPX tasks
it drains; qnn_sklearn's configurations never ask for it, and the operating system reclaims the
runtime's idle threads at exit. So the hook is removed as soon as concrete is imported.
"""

from __future__ import annotations

import atexit

import concrete.compiler
from concrete import fhe

atexit.unregister(concrete.compiler._terminate_df_parallelization)

__all__ = ["fhe"]
