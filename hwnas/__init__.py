"""hwnas: hardware-aware neural architecture search.

Pipeline layers (data flows one way): ops -> spaces -> runtimes -> latency -> search -> export, with ``cli`` the
only place that knows all of them. At the bottom, used by every layer: ``errors`` (the one-line error types),
``io`` (atomic writes, strict JSON, first line of an error), ``checks`` (one way to check configs and JSON files),
``locations`` (shipped data, the user's data folder, the cache) and ``outputs`` (output folders checked before
work starts). ``devices`` loads device profiles; ``zoo`` holds reference CNNs outside every space.
"""

__version__ = "0.1.0"
