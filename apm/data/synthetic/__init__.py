"""A synthetic AVA with known truth: rendered scenes, an aesthetic latent and simulated votes."""
