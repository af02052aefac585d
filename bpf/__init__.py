"""The XDP program's C sources (bcc dialect). Python code finds them through SOURCE_DIR."""
from pathlib import Path

SOURCE_DIR = Path(__file__).resolve().parent
