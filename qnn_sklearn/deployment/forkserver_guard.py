"""Preloaded by the executor's forkserver only: the forkserver dies with the service.

multiprocessing starts the forkserver from the service process and imports the modules of
``set_forkserver_preload`` there once. Importing this module is how code runs in the forkserver
before it forks anything: the kernel will SIGKILL it when the service ends, even on SIGKILL
(otherwise it stays alive with the FHE runtime loaded). Nothing else imports this module.
"""

from .lifetime import die_with_parent

die_with_parent()
