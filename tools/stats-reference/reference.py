"""Reference values for the comparative judge's statistics.

Writes operator/src/rollout/compare/reference.json: for each pair of
samples, the Mann-Whitney U statistic and p-value from SciPy's
`mannwhitneyu` (its default method choice, with continuity correction) and
the Hodges-Lehmann estimate and confidence interval from R's
`wilcox.test(x, y, conf.int = TRUE)` (its default method choice, with
continuity correction). The unit tests in compare/stats.rs read the file.

Run from the workspace root, with SciPy (PyPI) and R (Debian's r-base-core):
    python3 tools/stats-reference/reference.py
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import scipy
from scipy.stats import mannwhitneyu

OUT = Path("operator/src/rollout/compare/reference.json")
LEVELS = [0.95, 0.98]
ALTERNATIVES = ["two-sided", "greater", "less"]


def cases():
    rng = np.random.default_rng(20261207)
    yield "one against one", [1.0], [2.0]
    yield "two against one", [1.0, 2.0], [3.0]
    yield "small, apart", [1.1, 2.2, 3.3, 4.4, 5.5], [2.5, 3.5, 5.1, 6.2, 7.7, 8.8]
    yield "small against many", [10.5, 11.25, 9.75], list(np.round(rng.normal(10, 1, 20), 4))
    yield "identical inputs", [1.0, 2.0, 3.0, 4.0, 5.0], [1.0, 2.0, 3.0, 4.0, 5.0]
    yield "all tied", [1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]
    yield "two values", [0.0, 0.0, 1.0, 1.0, 1.0], [0.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    yield "rounded, with ties", list(np.round(rng.normal(5, 1, 12), 0)), list(np.round(rng.normal(5.5, 1, 15), 0))
    yield "forty against forty-five", list(rng.normal(100, 10, 40)), list(rng.normal(104, 10, 45))
    yield "sixty against seventy", list(rng.normal(0.02, 0.005, 60)), list(rng.normal(0.021, 0.005, 70))
    yield "latency, rounded to 0.1 ms", list(np.round(rng.lognormal(3, 0.3, 30), 1)), list(np.round(rng.lognormal(3.2, 0.3, 30), 1))
    yield "large shift", list(rng.normal(50, 2, 25)), list(rng.normal(60, 2, 25))


def r_shift(x, y, level):
    """R's wilcox.test estimate and interval, or None when R cannot."""
    fmt = lambda v: "c(" + ", ".join(repr(float(a)) for a in v) + ")"
    script = (
        f"r <- tryCatch(suppressWarnings(wilcox.test({fmt(x)}, {fmt(y)}, conf.int = TRUE, "
        f"conf.level = {level})), error = function(e) NULL);"
        "if (is.null(r)) cat('NA') else "
        "cat(sprintf('%.17g %.17g %.17g', r$estimate, r$conf.int[1], r$conf.int[2]))"
    )
    out = subprocess.run(["Rscript", "-e", script], check=True, capture_output=True, text=True).stdout
    if out.strip() == "NA":
        return None
    estimate, low, high = (float(v) for v in out.split())
    return {"estimate": estimate, "low": low, "high": high}


def r_version():
    out = subprocess.run(["Rscript", "-e", "cat(R.version.string)"], check=True, capture_output=True, text=True)
    return out.stdout.strip()


def main():
    rows = []
    for name, x, y in cases():
        x = [float(v) for v in x]
        y = [float(v) for v in y]
        tests = {}
        for alternative in ALTERNATIVES:
            result = mannwhitneyu(x, y, alternative=alternative)
            tests[alternative] = {"u": float(result.statistic), "p": float(result.pvalue)}
        shifts = {str(level): r_shift(x, y, level) for level in LEVELS}
        rows.append({"name": name, "x": x, "y": y, "mannWhitney": tests, "hodgesLehmann": shifts})
    document = {
        "generatedBy": "tools/stats-reference/reference.py",
        "scipy": scipy.__version__,
        "r": r_version(),
        "cases": rows,
    }
    OUT.write_text(json.dumps(document, indent=1) + "\n")
    print(f"wrote {len(rows)} cases to {OUT}", file=sys.stderr)


if __name__ == "__main__":
    main()
