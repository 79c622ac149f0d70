"""synthmed: generative models for small labelled medical image cohorts.

Train 3D and 2D GANs on a prepared cohort, synthesise labelled cohorts and measure what they are
worth.  Everything the ``synthmed`` command can do is available from this package.
"""

__version__ = "0.1.0"
