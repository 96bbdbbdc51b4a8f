"""Fault tests share the helpers in tests/ (fault server, run builders)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
