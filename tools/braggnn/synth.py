"""Synthetic Bragg peaks with known truth: pixel-integrated 2-D pseudo-Voigt + background + Poisson noise.

The same model as kernels/science/bragg_synth.{h,cc} (same parameter ranges and pixel integration; the random
streams differ, numpy's PCG64 vs C++'s mt19937_64, so the peaks are the same distribution, not the same numbers).

Coordinates: pixel (row r, col c) covers [c - 0.5, c + 0.5] x [r - 0.5, r + 0.5], so pixel centres are the integers
0..10 of an 11x11 patch. A peak is

  counts(r, c) = amplitude * [eta * L_x(c) L_y(r) + (1 - eta) * G_x(c) G_y(r)] + background

with G, L the 1-D Gaussian and Lorentzian of unit area integrated over the pixel (erf and arctan, exact) and the same
FWHM per axis for both; the counts are then Poisson-sampled.
"""
import math

import numpy as np

PATCH = 11

# Parameter ranges (keep in step with kernels/science/bragg_synth.h, struct PeakRanges).
CENTRE_MIN, CENTRE_MAX = 4.0, 6.0          # pixels, each axis
FWHM_MIN, FWHM_MAX = 1.2, 3.5              # pixels, each axis
ETA_MIN, ETA_MAX = 0.0, 1.0                # Lorentzian fraction
AMPLITUDE_MIN, AMPLITUDE_MAX = 300.0, 3000.0  # integrated counts
BACKGROUND_MIN, BACKGROUND_MAX = 0.0, 10.0    # counts per pixel

_SQRT2 = math.sqrt(2.0)
_FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))


def _erf(x):
    # numpy has no erf; math.erf vectorised.
    return np.vectorize(math.erf, otypes=[np.float64])(x)


def pixel_profile_1d(centre, fwhm, eta_lorentz):
    """Returns (gauss[PATCH], lorentz[PATCH]): unit-area profiles integrated over each pixel."""
    edges = np.arange(PATCH + 1, dtype=np.float64) - 0.5 - centre
    sigma = fwhm * _FWHM_TO_SIGMA
    gamma = fwhm / 2.0
    g = 0.5 * np.diff(_erf(edges / (_SQRT2 * sigma)))
    lo = np.diff(np.arctan(edges / gamma)) / math.pi
    return g, lo


def peak_expectation(cx, cy, fwhm_x, fwhm_y, eta, amplitude, background):
    """Expected counts [PATCH, PATCH] (row, col) of one peak."""
    gx, lx = pixel_profile_1d(cx, fwhm_x, eta)
    gy, ly = pixel_profile_1d(cy, fwhm_y, eta)
    shape = eta * np.outer(ly, lx) + (1.0 - eta) * np.outer(gy, gx)
    return amplitude * shape + background


def generate(n, seed):
    """n noisy peaks. Returns (counts float32 [n, 11, 11], truth float64 [n, 7]) with truth columns
    (cx, cy, fwhm_x, fwhm_y, eta, amplitude, background); cx is the column, cy the row, in pixels."""
    rng = np.random.default_rng(seed)
    u = lambda lo, hi: rng.uniform(lo, hi, size=n)
    truth = np.stack([u(CENTRE_MIN, CENTRE_MAX), u(CENTRE_MIN, CENTRE_MAX), u(FWHM_MIN, FWHM_MAX),
                      u(FWHM_MIN, FWHM_MAX), u(ETA_MIN, ETA_MAX), u(AMPLITUDE_MIN, AMPLITUDE_MAX),
                      u(BACKGROUND_MIN, BACKGROUND_MAX)], axis=1)
    out = np.empty((n, PATCH, PATCH), dtype=np.float32)
    for i in range(n):
        lam = peak_expectation(*truth[i])
        out[i] = rng.poisson(lam).astype(np.float32)
    return out, truth


def minmax_normalise(patches):
    """Per-patch min-max to [0, 1] (float32), as BraggNN's input; a constant patch becomes zeros."""
    p = patches.astype(np.float32)
    lo = p.min(axis=(-2, -1), keepdims=True)
    hi = p.max(axis=(-2, -1), keepdims=True)
    span = hi - lo
    return np.where(span > 0, (p - lo) / np.where(span > 0, span, 1), 0).astype(np.float32)
