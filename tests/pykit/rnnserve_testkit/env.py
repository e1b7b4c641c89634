"""Where things are, which tools a test needs, and how long a wait may be."""

import os
import shutil
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))

for _path in (os.path.join(ROOT, "tools"), os.path.join(ROOT, "client", "python")):
    if _path not in sys.path:
        sys.path.insert(0, _path)


def scaled(seconds):
    """A timeout in seconds, multiplied by $RNNSERVE_TEST_TIMEOUT_SCALE (the sanitizer stage
    runs a server several times slower; it raises the bounds rather than skipping tests)."""
    return seconds * float(os.environ.get("RNNSERVE_TEST_TIMEOUT_SCALE", "1"))


def require_tool(name, install_hint):
    """The path of executable `name`; AssertionError naming it when it is missing, so that a
    test needing it fails instead of passing or skipping."""
    path = shutil.which(name)
    if path is None:
        raise AssertionError(f"{name} is missing (not on PATH={os.environ.get('PATH', '')}); "
                             f"install it: {install_hint}")
    return path


def server_binary():
    """$RNNSERVE_BIN (ctest sets it), else build/server/rnnserve; AssertionError when neither
    is an executable."""
    path = os.environ.get("RNNSERVE_BIN")
    if not path:
        for build in ("build", "build-it", "build-deploy"):
            candidate = os.path.join(ROOT, build, "server", "rnnserve")
            if os.access(candidate, os.X_OK):
                return candidate
        raise AssertionError("set RNNSERVE_BIN to the rnnserve binary (ctest does)")
    if not os.access(path, os.X_OK):
        raise AssertionError(f"RNNSERVE_BIN={path} is not an executable")
    return path
