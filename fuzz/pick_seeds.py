"""Replaces a seed directory with the few corpus files that cover the most.

Usage: pick_seeds.py CONTROL MAX SEEDS_DIR

CONTROL is a libFuzzer merge control file (`-merge=1 -merge_control_file=`):
the file list, then `STARTED i size` and `FT i features...` per file. Files
are taken greedily, each time the one adding the most features not yet
covered (the smaller on a tie), until MAX are taken or none adds anything.
They are written to SEEDS_DIR named by the SHA-1 of their bytes, as
libFuzzer names corpus files; what was there before is removed.
"""

import hashlib
import pathlib
import sys


def read_control(path):
    lines = pathlib.Path(path).read_text().splitlines()
    count = int(lines[0])
    files = lines[2 : 2 + count]
    features = {}
    for line in lines[2 + count :]:
        kind, *rest = line.split()
        if kind == "FT":
            features[int(rest[0])] = set(map(int, rest[1:]))
    if not features:
        sys.exit(f"{path}: no features recorded; did the merge run?")
    return files, features


def pick(files, features, most):
    covered, chosen = set(), []
    sizes = {i: pathlib.Path(files[i]).stat().st_size for i in features}
    while len(chosen) < most:
        best = max(
            features,
            key=lambda i: (len(features[i] - covered), -sizes[i]),
            default=None,
        )
        if best is None or not features[best] - covered:
            break
        covered |= features.pop(best)
        chosen.append(files[best])
    return chosen


def main():
    control, most, out = sys.argv[1], int(sys.argv[2]), pathlib.Path(sys.argv[3])
    files, features = read_control(control)
    chosen = pick(files, features, most)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.iterdir():
        old.unlink()
    for f in chosen:
        data = pathlib.Path(f).read_bytes()
        (out / hashlib.sha1(data).hexdigest()).write_bytes(data)


if __name__ == "__main__":
    main()
