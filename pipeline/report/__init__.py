"""Report helpers: the fixed qualitative subset, Pillow figures and HTML tables."""
