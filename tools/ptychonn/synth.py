"""Synthetic ptychography with known truth (numpy; the C++ twin is kernels/science/ptychonn_synth.cc).

A complex object o = a * exp(i*phi) of side S = 8N, where a = 1 - 0.5*tanh(A), phi = 1.5*tanh(P), and
A and P are each a sum of 600 Gaussian blobs (weights U(0.5, 1), sigmas U(N/16, N/5), centres
uniform), truncated at 4 sigma. A probe of side N: a super-Gaussian disc exp(-(r/0.375N)^6) with a
defocus phase pi*(r/(N/2))^2. A pattern is taken at a random position: intensity
|fftshift(fft2(probe * patch))|^2 scaled to a total of 244*N^2 expected photons, Poisson noise.
The network input is log1p(counts); the truth is the patch's amplitude and phase.

The C++ twin draws from a different random generator, so it makes other samples from the same
distribution: tests use it for held-out data.
"""
import numpy as np

PHOTONS_PER_PIXEL = 244.0
BLOBS = 600


def blob_field(rng, side, n):
    field = np.zeros((side, side), np.float64)
    for _ in range(BLOBS):
        w = rng.uniform(0.5, 1.0)
        s = rng.uniform(n / 16, n / 5)
        cy, cx = rng.uniform(0, side, 2)
        r = int(np.ceil(4 * s))
        y0, y1 = max(0, int(cy) - r), min(side, int(cy) + r + 1)
        x0, x1 = max(0, int(cx) - r), min(side, int(cx) + r + 1)
        yy, xx = np.mgrid[y0:y1, x0:x1]
        field[y0:y1, x0:x1] += w * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
    return field


def make_object(seed, n):
    """(amplitude, phase) of the object for patch size n: float64 [8n, 8n] each."""
    rng = np.random.default_rng(seed)
    side = 8 * n
    amp = 1 - 0.5 * np.tanh(blob_field(rng, side, n))
    phase = 1.5 * np.tanh(blob_field(rng, side, n))
    return amp, phase


def make_probe(n):
    c = (n - 1) / 2
    yy, xx = np.mgrid[0:n, 0:n]
    r = np.hypot(yy - c, xx - c)
    return np.exp(-((r / (0.375 * n)) ** 6)) * np.exp(1j * np.pi * (r / (n / 2)) ** 2)


def diffraction(probe, amp, phase):
    """Expected photon counts (before noise) of one patch."""
    n = probe.shape[0]
    f = np.fft.fftshift(np.fft.fft2(probe * amp * np.exp(1j * phase)))
    inten = np.abs(f) ** 2
    return inten * (PHOTONS_PER_PIXEL * n * n / inten.sum())


def make_dataset(seed, n, count):
    """count samples from the object of `seed`: inputs [count,n,n] float32 (log1p counts),
    amplitude and phase truths [count,n,n] float32."""
    amp, phase = make_object(seed, n)
    return sample_patterns(np.random.default_rng(seed + 1_000_000), [(amp, phase)], make_probe(n), count)


def sample_patterns(rng, objects, probe, count):
    """count patterns at random positions of objects (a list of (amplitude, phase) from
    make_object; with several, each pattern's object is drawn first), as make_dataset returns."""
    n = probe.shape[0]
    xs = np.empty((count, n, n), np.float32)
    amps = np.empty_like(xs)
    phases = np.empty_like(xs)
    for i in range(count):
        amp, phase = objects[rng.integers(len(objects))] if len(objects) > 1 else objects[0]
        side = amp.shape[0]
        y, x = rng.integers(0, side - n + 1, 2)
        a = amp[y:y + n, x:x + n]
        p = phase[y:y + n, x:x + n]
        counts = rng.poisson(diffraction(probe, a, p))
        xs[i] = np.log1p(counts)
        amps[i] = a
        phases[i] = p
    return xs, amps, phases


def ssim(x, y, data_range, win=7):
    """Mean SSIM with a win x win uniform window over the valid region (skimage's defaults:
    K1 0.01, K2 0.03, sample covariance). The C++ twin is loom::science::Ssim."""
    from numpy.lib.stride_tricks import sliding_window_view as sw
    x = x.astype(np.float64)
    y = y.astype(np.float64)
    np_ = win * win
    cov = np_ / (np_ - 1)
    mx = sw(x, (win, win)).mean(axis=(-1, -2))
    my = sw(y, (win, win)).mean(axis=(-1, -2))
    vx = cov * (sw(x * x, (win, win)).mean(axis=(-1, -2)) - mx * mx)
    vy = cov * (sw(y * y, (win, win)).mean(axis=(-1, -2)) - my * my)
    vxy = cov * (sw(x * y, (win, win)).mean(axis=(-1, -2)) - mx * my)
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    s = ((2 * mx * my + c1) * (2 * vxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(s.mean())
