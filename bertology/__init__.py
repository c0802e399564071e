"""bertology: statistical analysis of the inside of BERT-family encoders.

The four layers of the architecture are sub-packages, and imports flow one way:
``bertology.extract`` (runs models, writes stores) -> ``bertology.store`` (the on-disk contract) <-
``bertology.analysis`` (statistics over stores) <- ``bertology.reports``.
"""

__version__ = "0.1.0"


class BertologyError(Exception):
    """An error the user can fix: the message names the file, line or option and what was expected."""
