"""The one bounded wait: poll a condition until a deadline."""

import time


def wait_until(predicate, timeout, what, interval=0.02):
    """Polls predicate() until it returns a true value (returned); AssertionError naming
    `what` after `timeout` seconds. predicate() may raise to stop waiting early."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
