"""hwnas: hardware-aware neural architecture search.

Pipeline layers (data flows one way): ops -> spaces -> runtimes -> latency -> search -> export.
"""

__version__ = "0.1.0"
