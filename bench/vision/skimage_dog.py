#!/usr/bin/python3
"""The scikit-image peer for loom-bench-dog: times skimage.feature.blob_dog on the frames that
`loom-bench-dog --out-dir DIR` wrote (16-bit PNG, frame_<seed>.png), one JSON line per n_bin.

Scales: for n_bin + 1 scales from 1.5 to 16 (the C++ bench's range), sigma_ratio =
(16 / 1.5) ** (1 / n_bin) and max_sigma = 16 / sqrt(sigma_ratio), so blob_dog's
k = int(log(max / min) / log(ratio) + 1) is exactly n_bin and its sigmas are 1.5 * ratio**i,
i = 0..n_bin: the same scale count as the kernel's (geometric instead of arithmetic spacing).
The C++ kSkimage mode uses exactly these parameters. threshold 0.1, overlap 0.5.

Usage (Debian's python3-skimage 0.19.3): /usr/bin/python3 bench/vision/skimage_dog.py DIR [n_bin ...]
"""
import glob
import json
import math
import os
import sys
import time

import numpy as np
import skimage
from PIL import Image
from skimage.feature import blob_dog
from skimage.util import img_as_float

MIN_SIGMA, MAX_SIGMA, THRESHOLD = 1.5, 16.0, 0.1


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    frames = sorted(glob.glob(os.path.join(sys.argv[1], "frame_*.png")))
    if not frames:
        sys.exit(f"no frame_*.png in {sys.argv[1]}; run loom-bench-dog --out-dir {sys.argv[1]} first")
    n_bins = [int(a) for a in sys.argv[2:]] or [3, 10, 50]
    # PIL hands 16-bit PNGs back as int32 ("I" mode): cast to uint16 so img_as_float scales by 65535.
    images = [img_as_float(np.asarray(Image.open(f)).astype(np.uint16)) for f in frames]
    assert images[0].dtype == np.float64 and images[0].shape == (1000, 1000), images[0].shape
    for n_bin in n_bins:
        ratio = (MAX_SIGMA / MIN_SIGMA) ** (1 / n_bin)
        max_sigma = MAX_SIGMA / math.sqrt(ratio)
        k = int(math.log(max_sigma / MIN_SIGMA) / math.log(ratio) + 1)
        assert k == n_bin, (k, n_bin)
        ms, blobs = [], 0
        for image in images:
            t0 = time.perf_counter()
            b = blob_dog(image, min_sigma=MIN_SIGMA, max_sigma=max_sigma, sigma_ratio=ratio,
                         threshold=THRESHOLD, overlap=0.5)
            ms.append((time.perf_counter() - t0) * 1e3)
            blobs += len(b)
        print(json.dumps({"bench": "skimage_dog", "n_bin": n_bin, "scales": k + 1, "images": len(images),
                          "ms_median": float(np.median(ms)), "ms_min": min(ms),
                          "blobs_per_image": blobs / len(images), "skimage": skimage.__version__}), flush=True)


if __name__ == "__main__":
    main()
