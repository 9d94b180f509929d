"""The ``scalearn`` command line: one module per command group, mounted in ``main.py``."""
