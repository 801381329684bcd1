"""Sub-commands of the ``forcelink`` CLI: one module each, with ``register``."""
