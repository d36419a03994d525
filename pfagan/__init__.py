"""PFAGAN: a GAN conditioned on a semantic category and a normalised score histogram.

After N. Murray, "PFAGAN: an aesthetics-conditional GAN for generating photographic fine art"
(ICCV workshops 2019): the generator's batch norms are mixed-conditional
(:mod:`pfagan.layers`), the discriminator projects its features on the joint condition
(:mod:`pfagan.discriminator`), and both train with the hinge loss on Ray Train
(:mod:`pfagan.training`, ``jobs.train_pfagan``).
Generator checkpoints carry their configuration and category names (:mod:`pfagan.checkpoint`).
"""
