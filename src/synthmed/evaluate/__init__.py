"""synthmed.evaluate: post-hoc analyses of a synthetic cohort against the real one.

:mod:`synthmed.evaluate.privacy` (nearest neighbours, distance to closest record, membership inference)
and :mod:`synthmed.evaluate.embeddings` (2-D PCA / MDS plots of features). Import the submodules
directly; nothing heavy is imported here.
"""
