"""Makes the input files of Ferry's data-on-laptop bench notebooks.

    /usr/bin/python3 make.py NAME DIR

writes NAME's files into DIR (the laptop's notebook folder in the bench)
once: a stamp file records the version, and a second call with the same
version does nothing. Everything is seeded, so every machine gets the same
bytes. The data is synthetic but shaped like the real thing (issue 16):

- remote_sensing: six bands of a 2048 x 4096 scene as uint16 reflectance
  (one .npy per band, as Sentinel-2 ships one file per band), ~100 MB;
  smooth fields plus sensor noise, so they compress only somewhat.
- image_recognition: a folder of 900 JPEG photos (640 x 480, ~50 MB,
  already compressed, so they cross the link at their size) in three
  classes that differ in colour and texture, one in ten mislabelled.
- tabular: a sales ledger as CSV, ~90 MB (2.5 M rows), and a small
  customers CSV.
"""
import os
import sys

import numpy as np

VERSION = "1"


def remote_sensing(d):
    rng = np.random.default_rng(2021)
    H, W = 2048, 4096
    os.makedirs(os.path.join(d, "scene"), exist_ok=True)
    # Land cover: a few smooth fields from low-resolution noise, upsampled.
    low = rng.random((3, H // 64, W // 64))
    fields = np.kron(low, np.ones((64, 64)))
    y = np.linspace(0, 1, H)[:, None]
    x = np.linspace(0, 1, W)[None, :]
    veg = np.clip(fields[0] * 0.7 + 0.3 * x, 0, 1)
    water = fields[1] > 0.85
    bright = fields[2]
    base = [0.08 + 0.05 * bright, 0.10 + 0.06 * bright, 0.12 - 0.08 * veg + 0.05 * bright,
            0.20 + 0.45 * veg, 0.25 + 0.15 * bright - 0.1 * veg, 0.15 + 0.1 * bright]
    for i, b in enumerate(base):
        b = np.where(water, 0.03 + 0.01 * i, b) + 0.02 * y
        noise = rng.normal(0, 0.01, (H, W))
        band = np.clip((b + noise) * 10000, 0, 65535).astype(np.uint16)
        np.save(os.path.join(d, "scene", f"B{i + 1:02d}.npy"), band)


def tabular(d):
    rng = np.random.default_rng(7)
    n_cust, n = 60_000, 2_500_000
    regions = np.array(["north", "south", "east", "west"])
    cust_region = rng.integers(0, 4, n_cust)
    cust_age = rng.integers(18, 90, n_cust)
    with open(os.path.join(d, "customers.csv"), "w") as f:
        f.write("customer,region,age\n")
        for c in range(n_cust):
            f.write(f"{c},{regions[cust_region[c]]},{cust_age[c]}\n")
    cust = rng.integers(0, n_cust, n)
    day = np.sort(rng.integers(0, 730, n))
    qty = rng.poisson(2, n) + 1
    price = np.round(rng.lognormal(3, 0.8, n), 2)
    cat = rng.integers(0, 12, n)
    disc = np.round(rng.choice([0, 0, 0, 0.1, 0.2], n), 2)
    chan = np.array(["web", "store", "app"])[rng.integers(0, 3, n)]
    with open(os.path.join(d, "sales.csv"), "w") as f:
        f.write("order,customer,day,category,channel,quantity,unit_price,discount\n")
        step = 100_000
        for s in range(0, n, step):
            e = min(n, s + step)
            f.write("".join(f"{i},{cust[i]},{day[i]},{cat[i]},{chan[i]},{qty[i]},{price[i]},{disc[i]}\n" for i in range(s, e)))


def image_recognition(d):
    from PIL import Image
    rng = np.random.default_rng(6)
    H, W = 480, 640
    y, x = np.mgrid[0:H, 0:W].astype(np.float32)
    os.makedirs(os.path.join(d, "photos"), exist_ok=True)
    with open(os.path.join(d, "photos", "labels.csv"), "w") as f:
        f.write("file,label\n")
        for i in range(900):
            label = i % 3
            # Class 0: warm, smooth; 1: green, striped; 2: blue, checkered;
            # each with its own random phase, scale and noise.
            freq = rng.uniform(0.01, 0.03) * (1 + 0.4 * label)
            phase = rng.uniform(0, 6.28)
            tex = np.sin(freq * x + phase) * (np.sin(freq * y + phase) if label == 2 else 1)
            base = [(0.53, 0.5, 0.47), (0.5, 0.53, 0.47), (0.47, 0.5, 0.53)][label]
            tint = rng.normal(0, 0.12, 3)
            img = np.stack([np.clip(base[c] + tint[c] + 0.25 * tex * (0.5 + label / 2) + rng.normal(0, 0.04, (H, W)), 0, 1) for c in range(3)], axis=2)
            name = f"img_{i:04d}.jpg"
            Image.fromarray((img * 255).astype(np.uint8)).save(os.path.join(d, "photos", name), quality=80)
            # One photo in ten is mislabelled, as in real collections.
            f.write(f"{name},{label if rng.random() > 0.1 else rng.integers(0, 3)}\n")


MAKERS = {"remote_sensing": remote_sensing, "tabular": tabular, "image_recognition": image_recognition}


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in MAKERS:
        sys.exit(f"usage: make.py {{{'|'.join(MAKERS)}}} DIR")
    name, d = sys.argv[1], sys.argv[2]
    os.makedirs(d, exist_ok=True)
    stamp = os.path.join(d, f".made-{name}")
    if os.path.exists(stamp) and open(stamp).read() == VERSION:
        return
    MAKERS[name](d)
    with open(stamp, "w") as f:
        f.write(VERSION)


if __name__ == "__main__":
    main()
