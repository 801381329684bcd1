"""The HTTP API: images and status."""
