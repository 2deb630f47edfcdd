"""LSCA - Linux System Call Agent."""
__version__ = "0.1.0"
