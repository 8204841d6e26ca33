#!/usr/bin/python3
"""Golden files for the DoG kernel's scikit-image-compatible mode (kernels/vision/dog.h, kSkimage).

Writes, into tests/data/vision/ (or the directory given as the first argument):
  dog_img{0,1,2}.png   8-bit grayscale 256x256 test images: 15-30 Gaussian blobs of sigma 1.5-8
                       at seeded random places (some touching, some on the border) on a dim
                       background, with Poisson and Gaussian noise;
  dog_img{i}_{p}.csv   skimage.feature.blob_dog(img_as_float(image), **params[p]) as rows
                       "y,x,sigma" (repr precision), in the order blob_dog returns them;
  dog_golden.csv       the manifest: image, csv, min_sigma, max_sigma, sigma_ratio, threshold, overlap.

Regenerate (about 5 s; Debian's python3-skimage 0.19.3, numpy, scipy, PIL for PNG):
    /usr/bin/python3 tools/vision/skimage_golden.py tests/data/vision

blob_dog prunes overlapping blobs visiting the pairs in a Python set's iteration order; the C++
port visits them in ascending (i, j) order. The two orders give different results only for chains
(A drops B, B drops C). The script checks each case with an independent ascending-order prune and
fails if they differ, so the committed goldens are ones where the order does not matter.
"""
import math
import os
import sys

import numpy as np
import skimage
from PIL import Image
from skimage.feature import blob_dog
from skimage.feature.blob import _blob_overlap
from skimage.util import img_as_float

PARAMS = {
    "a": dict(min_sigma=1.0, max_sigma=10.0, sigma_ratio=1.6, threshold=0.1, overlap=0.5),
    "b": dict(min_sigma=2.0, max_sigma=16.0, sigma_ratio=1.3, threshold=0.05, overlap=0.5),
    "c": dict(min_sigma=1.5, max_sigma=12.0, sigma_ratio=1.6, threshold=0.2, overlap=0.3),
}


def make_image(seed, size=256):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(15, 31))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    clean = np.full((size, size), 0.05)
    for _ in range(n):
        cy, cx = rng.uniform(0, size - 1, 2)
        sigma = rng.uniform(1.5, 8.0)
        amp = rng.uniform(0.4, 0.9)
        clean += amp * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma ** 2))
    clean = np.clip(clean, 0, 1)
    noisy = rng.poisson(clean * 200) / 200 + rng.normal(0, 0.01, clean.shape)
    return (np.clip(noisy, 0, 1) * 255 + 0.5).astype(np.uint8)


def prune_ascending(blobs, overlap):
    """skimage's _prune_blobs with the pairs visited in ascending (i, j) order."""
    blobs = blobs.copy()
    if len(blobs) < 2:
        return blobs
    distance = 2 * blobs[:, -1].max() * math.sqrt(2)
    for i in range(len(blobs)):
        for j in range(i + 1, len(blobs)):
            if np.sqrt(np.sum((blobs[i, :2] - blobs[j, :2]) ** 2)) > distance:
                continue
            if _blob_overlap(blobs[i], blobs[j]) > overlap:
                if blobs[i, -1] > blobs[j, -1]:
                    blobs[j, -1] = 0
                else:
                    blobs[i, -1] = 0
    return blobs[blobs[:, -1] > 0]


def as_set(blobs):
    return sorted(map(tuple, blobs.tolist()))


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "tests/data/vision"
    os.makedirs(out, exist_ok=True)
    assert skimage.__version__ == "0.19.3", skimage.__version__
    manifest = ["image,csv,min_sigma,max_sigma,sigma_ratio,threshold,overlap"]
    for idx, seed in enumerate([11, 22, 33]):
        img = make_image(seed)
        png = f"dog_img{idx}.png"
        Image.fromarray(img, mode="L").save(os.path.join(out, png))
        # Read back what was written: the C++ test sees exactly these pixels.
        img = np.asarray(Image.open(os.path.join(out, png)))
        image = img_as_float(img)
        for name, p in PARAMS.items():
            blobs = blob_dog(image, **p)
            unpruned = blob_dog(image, **dict(p, overlap=1.0))  # overlap > 1 never holds
            if as_set(prune_ascending(unpruned, p["overlap"])) != as_set(blobs):
                sys.exit(f"{png} params {name}: pruning depends on pair order; pick another seed")
            csv = f"dog_img{idx}_{name}.csv"
            with open(os.path.join(out, csv), "w") as f:
                f.write("y,x,sigma\n")
                for y, x, s in blobs:
                    f.write(f"{y!r},{x!r},{s!r}\n")
            manifest.append(f"{png},{csv},{p['min_sigma']!r},{p['max_sigma']!r},{p['sigma_ratio']!r},"
                            f"{p['threshold']!r},{p['overlap']!r}")
            print(f"{png} {name}: {len(blobs)} blobs ({len(unpruned)} before pruning)")
    with open(os.path.join(out, "dog_golden.csv"), "w") as f:
        f.write("\n".join(manifest) + "\n")


if __name__ == "__main__":
    main()
