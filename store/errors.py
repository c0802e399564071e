"""The store layer's refusals."""

from bertology import BertologyError


class StoreError(BertologyError):
    """A path that is not a complete, readable bertology store."""
