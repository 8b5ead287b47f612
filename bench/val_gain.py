"""A variant's NDCG@100 gain over its base, paired by fold, on the validation and on the test playlists: a default is
chosen on validation, so a gain that shows on the test folds only does not make one.

    .venv/bin/python -m bench.val_gain BASE NAME [--runs=runs]     # runs/BASE/fK/out vs runs/NAME/fK/out
"""

import json
import sys
from pathlib import Path

import numpy as np

FILES = (("validation", "metrics_val.json"), ("test", "metrics.json"))


def gains(base: Path, variant: Path, file: str, method: str) -> list[float]:
    out = []
    for fold in sorted(variant.glob("f*")):
        new = json.loads((fold / "out" / file).read_text())[method]["ndcg@100"]
        old = json.loads((base / fold.name / "out" / file).read_text())[method]["ndcg@100"]
        out.append(new / old - 1)
    return out


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    runs = Path(next((a.split("=", 1)[1] for a in argv if a.startswith("--runs=")), "runs"))
    names = [a for a in argv if not a.startswith("--")]
    if len(names) != 2:
        sys.exit(__doc__.strip().splitlines()[-1].strip())
    base, variant = runs / names[0], runs / names[1]
    print("| split | method | gain, paired (mean ± std) | per fold |\n|---|---|---|---|")
    for split, file in FILES:
        for method in ("model", "fusion"):
            g = gains(base, variant, file, method)
            spread = f" (±{np.std(g, ddof=1):.1%})" if len(g) > 1 else ""
            print(f"| {split} | {method} | {np.mean(g):+.1%}{spread} | {' '.join(f'{x:+.1%}' for x in g)} |")


if __name__ == "__main__":
    main()
