"""Benchmark: DICOM intake against decompression bombs, and its throughput on normal files.

Data, written to a temporary folder: eight 16-bit RLE "bombs", each a file of about 2 MB that
declares 8192 x 8192 pixels (128 MiB decoded; runs of 128 equal bytes, PS3.5 G.3.1), and normal
files made from the three real NIH 1024 x 1024 PNGs (`../shared/data/nih/images_1024`), stored as
12-bit DX DICOM (uncompressed and RLE), repeated to NORMAL files.
(a) peak memory: a fresh Python process reads the bombs and the normal files, interleaved, through
    `model.infer.intakes` (the read-ahead of `model.infer` and the held-out run, default rules)
    and reports its peak resident set (`resource.getrusage` ru_maxrss); a second process that only
    imports the same modules gives the baseline. Goal: under 1.5 GB, bombs rejected before decoding.
(b) throughput on the normal files, in one run: `model.dicom.intake` with the default rules against
    the same intake with the budget and the blank-image check switched off (limits out of reach,
    `min_display_std` 0: no standard deviation computed); best of REPEATS, interleaved. Goal: a
    ratio within noise of 1.
`python -m bench.intake` prints the lines; `main()` returns the figures.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
NIH_1024 = REPO.parent / "shared" / "data" / "nih" / "images_1024"
BOMBS, NORMAL, REPEATS = 8, 24, 7
GOAL_MB = 1536

_CHILD = """
import json, resource, sys
sys.path.insert(0, {repo!r})
from model import dicom, infer
files = json.loads(sys.argv[1])
statuses = {{}}
if files:
    for item in infer.intakes(files, dicom.rules_from(None)):
        key = item.status + (":" + ",".join(item.check.codes) if item.check.codes else "")
        statuses[key] = statuses.get(key, 0) + 1
print(json.dumps({{"maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "statuses": statuses}}))
"""


def bomb(path: Path, rows: int = 8192, cols: int = 8192) -> Path:
    """A 16-bit RLE file declaring rows x cols, about rows*cols/64 bytes of pixel data."""
    from pydicom.encaps import encapsulate
    from pydicom.uid import RLELossless

    from model import dicom

    n = rows * cols
    segment = bytes([0x81, 0x00]) * (n // 128) + (bytes([(n % 128) - 1, 0]) if n % 128 else b"")
    header = np.zeros(16, "<u4")
    header[0], header[1], header[2] = 2, 64, 64 + len(segment)
    ds = dicom.build_dataset(np.zeros((2, 2), np.uint16), age="050Y")
    ds.Rows, ds.Columns = rows, cols
    ds.PixelData = encapsulate([header.tobytes() + segment + segment])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = RLELossless
    return dicom.save(ds, path)


def normal_files(folder: Path, n: int) -> list[Path]:
    """12-bit DX files from the real NIH 1024 px PNGs, every other one RLE-compressed."""
    from PIL import Image
    from pydicom.uid import RLELossless

    from model import dicom

    pngs = sorted(NIH_1024.glob("*.png"))
    if not pngs:
        raise FileNotFoundError(f"no PNG files in {NIH_1024} (expected ../shared/data beside the repository)")
    out = []
    for i in range(n):
        grey = np.asarray(Image.open(pngs[i % len(pngs)]).convert("L"), np.float64)
        ds = dicom.build_dataset(np.rint(grey * 4095 / 255).astype(np.uint16), age="050Y")
        ds.BitsStored, ds.HighBit = 12, 11
        if i % 2:
            ds.compress(RLELossless)
        out.append(dicom.save(ds, folder / f"normal_{i:03d}.dcm"))
    return out


def _child(files: list[Path]) -> dict:
    code = _CHILD.format(repo=str(REPO))
    done = subprocess.run([sys.executable, "-c", code, json.dumps([str(f) for f in files])],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> dict:
    from model import dicom

    with tempfile.TemporaryDirectory(prefix="bench-intake-") as tmp:
        folder = Path(tmp)
        bombs = [bomb(folder / f"bomb_{i}.dcm") for i in range(BOMBS)]
        normals = normal_files(folder, NORMAL)
        mixed = [f for pair in zip(bombs, normals) for f in pair] + normals[len(bombs):]
        baseline, run = _child([]), _child(mixed)
        rules = dicom.rules_from(None)
        off = dicom.rules_from({"max_megapixels": 1e9, "max_decoded_mb": 1e9, "min_display_std": 0})
        best = {"intake": float("inf"), "without": float("inf")}
        for _ in range(REPEATS):
            for name, fn in (("intake", lambda p: dicom.intake(p, rules)),
                             ("without", lambda p: dicom.intake(p, off))):
                start = time.perf_counter()
                for p in normals:
                    fn(p)
                best[name] = min(best[name], time.perf_counter() - start)
        bomb_mb = sum(b.stat().st_size for b in bombs) / 2**20
    result = {
        "bombs": BOMBS, "bomb_file_mb": round(bomb_mb / BOMBS, 2), "normal_files": NORMAL,
        "peak_rss_mb": round(run["maxrss_mb"], 1), "baseline_rss_mb": round(baseline["maxrss_mb"], 1),
        "goal_mb": GOAL_MB, "goal_met": run["maxrss_mb"] < GOAL_MB, "statuses": run["statuses"],
        "intake_files_per_s": round(NORMAL / best["intake"], 1),
        "without_checks_files_per_s": round(NORMAL / best["without"], 1),
        "throughput_ratio": round(best["without"] / best["intake"], 3),
    }
    print(f"intake: {BOMBS} RLE bombs ({result['bomb_file_mb']} MB each, 8192x8192x16 bit declared) and "
          f"{NORMAL} normal 1024x1024 12-bit files: peak RSS {result['peak_rss_mb']} MB "
          f"(imports alone {result['baseline_rss_mb']} MB; goal < {GOAL_MB} MB: "
          f"{'met' if result['goal_met'] else 'NOT met'}); statuses {result['statuses']}")
    print(f"intake: throughput on normal files {result['intake_files_per_s']} files/s with the budget and "
          f"blank-image checks, {result['without_checks_files_per_s']} without (ratio {result['throughput_ratio']})")
    return result


if __name__ == "__main__":
    main()
