"""A Ctrl-C that lands where Python drops exceptions (a finalizer) is still seen by the wait loops."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_a_swallowed_interrupt_is_raised_again_by_the_wait_loops() -> None:
    # In a child process: the handlers are process-wide and must not leak into the test session.
    script = textwrap.dedent(
        """
        import os, signal, sys
        from fedge.interrupts import install_interrupt_handlers, raise_if_interrupted

        install_interrupt_handlers()
        raise_if_interrupted()  # nothing yet
        try:
            os.kill(os.getpid(), signal.SIGINT)
            signal.sigtimedwait([], 0.1) if hasattr(signal, "sigtimedwait") else None
        except KeyboardInterrupt:
            pass  # what a finalizer does to it: printed, then dropped
        try:
            raise_if_interrupted()
        except KeyboardInterrupt:
            sys.exit(7)
        sys.exit(0)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 7, result.stderr
