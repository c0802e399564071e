"""``bertology serve``: a local web explorer and JSON API over a results folder's index and stores."""

from .app import create_app, serve
from .explorer import Explorer

__all__ = ["create_app", "serve", "Explorer"]
