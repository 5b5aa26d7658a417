"""hermes-pacer: a dispatch pacer that caps what a Hermes Kanban board sends to its LLM endpoint.

Standard library only: it runs on every Hermes host with the system python3.
"""

__version__ = "0.5.0"
