"""Base layer: error types, carets under bad user text, progress bars, optional imports,
batch-means statistics and the method registry. Imports nothing else from the package."""
