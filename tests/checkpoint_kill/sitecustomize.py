"""Test-only fault injection for tests/test_propensity_checkpoint.py, kept out of production
code: a process whose PYTHONPATH starts with this folder (the `lmp` plugin's embedded
interpreter included: Python imports ``sitecustomize`` at start-up) SIGKILLs itself right after
the propensity checkpoint named by ``GLASSCAM_KILL_AT_CHECKPOINT`` is complete: ``STEP`` (any
replica) or ``c<c>_s<s>.STEP`` (that replica), exactly as a node failure at that instant."""

import os

_AT = os.environ.get("GLASSCAM_KILL_AT_CHECKPOINT")

if _AT:
    import signal
    import sys

    import glasscam.insitu.isoconfigurational as _iso

    _real = _iso._write_checkpoint

    def _write_then_die(lmp, run, step, output, ref0):
        _real(lmp, run, step, output, ref0)
        c, s = run.task
        if _AT in (str(step), f"c{c}_s{s}.{step}") and run.is_root:
            sys.stdout.flush()
            os.kill(os.getpid(), signal.SIGKILL)

    _iso._write_checkpoint = _write_then_die
