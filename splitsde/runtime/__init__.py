"""Runtime layer: the compiled integrator, the one time loop and what a run needs (noise,
grids, checkpoints, trajectories, observers, fingerprints, divergence checks)."""
