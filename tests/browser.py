"""Headless Chromium for the page tests: Debian's Chromium (installed with apt where missing) and a check
that a screenshot is not blank."""

from __future__ import annotations

import io
import os
import shutil
import subprocess

import numpy as np


def non_blank(png: bytes) -> tuple[tuple[int, int], float]:
    """The image's size and the share of its pixels that are not (near) white."""
    from PIL import Image

    img = Image.open(io.BytesIO(png))
    img.load()
    px = np.asarray(img.convert("RGB"), dtype=np.float64)
    ink = (px.min(axis=2) < 235).mean()
    return img.size, ink


def chromium() -> tuple[str | None, str]:
    """Debian's Chromium, installed with apt-get where missing; (path, why not) when it cannot be had."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name), ""
    if not shutil.which("apt-get") or os.geteuid() != 0:
        return None, "Chromium is not installed and apt-get (as root) is not available to install it"
    log = ""
    for cmd in (["apt-get", "install", "-y", "-q", "chromium"], ["apt-get", "update", "-q"],
                ["apt-get", "install", "-y", "-q", "chromium"]):
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=900,
                           env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
        log = (p.stdout + p.stderr)[-500:]
        if shutil.which("chromium"):
            return shutil.which("chromium"), ""
    return None, f"Chromium is not installed and `apt-get install chromium` failed: {log}"
