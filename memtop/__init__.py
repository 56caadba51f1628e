"""memtop: top for the Python heap."""

__version__ = "0.1.0"
