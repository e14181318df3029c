"""Bundled recipes (YAML) of the toolkit: `momentumrnn list recipes`."""
