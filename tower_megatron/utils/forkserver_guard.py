"""Preloaded by a pool's forkserver (``set_forkserver_preload``): ties the forkserver's life to
the job that started it.

A forkserver outlives a job killed with ``kill -9`` (measured with CPython 3.12: it and its
workers were re-parented to init and kept running), and pool workers are the forkserver's
children, so their own ``PR_SET_PDEATHSIG`` only fires when the forkserver dies. Importing this
module inside the forkserver sets the forkserver's death signal: job dies → forkserver dies →
workers die. Imported anywhere else it does nothing.
"""

from tower_megatron.utils.process import die_with_parent, in_forkserver

if in_forkserver():
    die_with_parent()
