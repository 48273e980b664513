"""The docs check: doc_blocks.py is importable as a plain module from here."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
