"""Lambda step package (handler in handler.py)."""
