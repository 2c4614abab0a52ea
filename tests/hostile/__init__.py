"""The hostile-input suite: crafted locks, packages, wheels, layers, images, registry and channel
responses, recipes and machines. Each case asserts a clear one-line error (exit code per
docs), no traceback, nothing written outside the destination and nothing half-written."""
