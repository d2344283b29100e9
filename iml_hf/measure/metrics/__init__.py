"""``evaluate`` metric modules shipped with the package, loaded by path with ``evaluate.load``."""
