__version__ = "0.6.3"

#: The version that study cells are keyed with (``annt.experiments.cells``): it changes only when
#: a release changes what an existing cell computes (attack, training or evaluation results), so a
#: release that only adds features keeps every stored study result valid on resume.
RESULTS_VERSION = "0.1.0"
