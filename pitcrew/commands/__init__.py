"""Sub-commands of the ``pitcrew`` CLI: one module each, exposing ``register(subparsers)``."""
