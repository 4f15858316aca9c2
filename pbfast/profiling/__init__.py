"""Profiles of a running pbfast process in pprof's format: CPU (every thread), heap, flame graphs; served
on the ``--pprof-addr`` listener (:mod:`pbfast.profiling.app`)."""
