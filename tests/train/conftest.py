"""tests/train/ on sys.path: the stand-in method and the worker modules that subprocesses and
spawned processes import by name."""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
