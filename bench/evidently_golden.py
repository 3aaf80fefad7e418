"""Regenerate tests/monitoring/golden/evidently.json: Evidently's own drift numbers on small data.

    python3 bench/evidently_golden.py

Runs in its own environment, bench/.venv-evidently (made here from bench/requirements-evidently.txt
if missing): Evidently 0.7 needs pandas < 3 and the project runs pandas 3. The suite never imports
Evidently; it compares monitoring's numbers with the values written here, so a test fails if our code
changes them, and regenerating after an Evidently upgrade shows (as a diff of this file) what changed.

Each case is one column, reference and current, with the edge cases Evidently has answers for (NaN,
±inf, nulls, constant columns, categories never seen in the reference, few distinct values, integer
columns, an empty current side) and every method that applies to the column's kind, plus a few
multi-column frames for the dataset verdict. The data go into the file too, so the tests need nothing
else. Evidently is run through its legacy Report + DataDriftTable with an explicit ColumnMapping (the
numbers are the ones the 0.7 `Report([DataDriftPreset()])` shows: both call the same stattests).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
VENV = BENCH / ".venv-evidently"
OUTPUT = BENCH.parent / "tests" / "monitoring" / "golden" / "evidently.json"


def ensure_venv():
    """Re-run this script inside bench/.venv-evidently, making it first if needed."""
    python = VENV / "bin" / "python"
    if Path(sys.prefix).resolve() == VENV.resolve():
        return
    marker = VENV / ".installed"
    requirements = BENCH / "requirements-evidently.txt"
    if not marker.exists() or marker.stat().st_mtime < requirements.stat().st_mtime:
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "-r", str(requirements)], check=True)
        marker.touch()
    os.execv(str(python), [str(python), *sys.argv])


NUMERIC_METHODS = [None, "psi", "jensenshannon", "wasserstein", "ks"]
CATEGORICAL_METHODS = [None, "psi", "jensenshannon", "chisquare", "z"]


def make_cases(np):
    rng = np.random.default_rng(20261111)

    def normal(loc, scale, n, decimals=4):
        return np.round(rng.normal(loc, scale, n), decimals).tolist()

    def with_holes(values, nan=0.03, inf=0.01):
        values = list(values)
        for index in range(len(values)):
            draw = rng.random()
            if draw < nan:
                values[index] = float("nan")
            elif draw < nan + inf:
                values[index] = float("inf") if rng.random() < 0.5 else float("-inf")
        return values

    def choice(options, n, p=None, nulls=0.0):
        values = rng.choice(options, size=n, p=p).tolist()
        return [None if rng.random() < nulls else value for value in values]

    numeric = [
        ("small_normal_shifted", normal(0, 1, 500), normal(0.4, 1, 400)),
        ("small_normal_same", normal(0, 1, 500), normal(0, 1, 400)),
        ("large_normal_shifted", normal(10, 2, 1500), normal(10.6, 2, 1200)),
        ("large_normal_same", normal(10, 2, 1500), normal(10, 2, 1200)),
        ("large_wider_spread", normal(0, 1, 1500), normal(0, 1.6, 1200)),
        ("nan_and_inf", with_holes(normal(5, 1, 1500)), with_holes(normal(5.3, 1, 1100))),
        ("small_nan_and_inf", with_holes(normal(5, 1, 400)), with_holes(normal(5, 1, 300))),
        ("constant_same", [3.0] * 1500, [3.0] * 900),
        ("constant_moved", [3.0] * 1500, [4.0] * 900),
        ("small_constant_same", [3.0] * 200, [3.0] * 150),
        (
            "ten_values_shifted",
            rng.integers(0, 10, 2000).astype(float).tolist(),
            rng.integers(2, 12, 1500).astype(float).tolist(),
        ),
        (
            "twenty_values",
            rng.integers(0, 20, 2000).astype(float).tolist(),
            rng.integers(0, 20, 1500).astype(float).tolist(),
        ),
        (
            "twentyone_values",
            rng.integers(0, 21, 2000).astype(float).tolist(),
            rng.integers(0, 21, 1500).astype(float).tolist(),
        ),
        (
            "three_values_small",
            rng.choice([1.0, 2.0, 3.0], 600).tolist(),
            rng.choice([1.0, 2.0, 3.0], 500, p=[0.5, 0.3, 0.2]).tolist(),
        ),
        (
            "two_values_small",
            rng.choice([0.0, 1.0], 600).tolist(),
            rng.choice([0.0, 1.0], 500, p=[0.65, 0.35]).tolist(),
        ),
        (
            "two_values_large",
            rng.choice([0.0, 1.0], 3000).tolist(),
            rng.choice([0.0, 1.0], 2000, p=[0.6, 0.4]).tolist(),
        ),
        ("current_outside_reference", normal(0, 1, 1500), normal(8, 1, 1000)),
        ("tiny_current", normal(0, 1, 1500), normal(0, 1, 7)),
        ("all_nan_current", normal(0, 1, 300), [float("nan")] * 50),
    ]
    integer = [
        ("integer_ages_small", rng.integers(18, 81, 400).tolist(), rng.integers(25, 90, 300).tolist()),
        ("integer_ages_large", rng.integers(18, 81, 3000).tolist(), rng.integers(18, 81, 2500).tolist()),
    ]
    categorical = [
        ("cat_three_small", choice(["a", "b", "c"], 400), choice(["a", "b", "c"], 300, p=[0.6, 0.2, 0.2])),
        ("cat_three_small_same", choice(["a", "b", "c"], 400), choice(["a", "b", "c"], 300)),
        ("cat_unseen_small", choice(["a", "b", "c"], 400), choice(["a", "b", "c", "d"], 300)),
        ("cat_two_small", choice(["yes", "no"], 500), choice(["yes", "no"], 400, p=[0.7, 0.3])),
        ("cat_one_each_same", ["x"] * 300, ["x"] * 200),
        (
            "cat_large",
            choice(["dsl", "fiber", "none"], 2000, p=[0.4, 0.45, 0.15]),
            choice(["dsl", "fiber", "none"], 1500, p=[0.3, 0.6, 0.1]),
        ),
        (
            "cat_large_unseen",
            choice(["dsl", "fiber", "none"], 2000),
            choice(["dsl", "fiber", "none", "satellite"], 1500),
        ),
        ("cat_nulls", choice(["p", "q", "r", "s"], 2000, nulls=0.1), choice(["p", "q", "r", "s"], 1500, nulls=0.3)),
        ("cat_all_null_current", choice(["p", "q"], 300), [None] * 40),
    ]
    cases = []
    for name, reference, current in numeric:
        cases.append({"name": name, "kind": "numeric", "integer": False, "reference": reference, "current": current})
    for name, reference, current in integer:
        cases.append({"name": name, "kind": "numeric", "integer": True, "reference": reference, "current": current})
    for name, reference, current in categorical:
        cases.append(
            {"name": name, "kind": "categorical", "integer": False, "reference": reference, "current": current}
        )
    return cases


def frame(pd, values, kind, integer):
    if kind == "categorical":
        return pd.Series(values, dtype=object)
    return pd.Series(values, dtype="int64" if integer else "float64")


def evidently_column(pd, case, method):
    from evidently.legacy.metrics import DataDriftTable
    from evidently.legacy.pipeline.column_mapping import ColumnMapping
    from evidently.legacy.report import Report

    column = "x"
    mapping = ColumnMapping(
        target=None,
        prediction=None,
        numerical_features=[column] if case["kind"] == "numeric" else [],
        categorical_features=[column] if case["kind"] == "categorical" else [],
    )
    reference = pd.DataFrame({column: frame(pd, case["reference"], case["kind"], case["integer"])})
    current = pd.DataFrame({column: frame(pd, case["current"], case["kind"], case["integer"])})
    report = Report(metrics=[DataDriftTable(columns=[column], stattest=method)])
    try:
        report.run(reference_data=reference, current_data=current, column_mapping=mapping)
        result = report.as_dict()["metrics"][0]["result"]["drift_by_columns"][column]
    except Exception as exc:  # Evidently's answer for this input is an error: recorded as such
        return {"method": method or "auto", "error": f"{type(exc).__name__}: {exc}"}
    return {
        "method": method or "auto",
        "stattest_name": result["stattest_name"],
        "score": float(result["drift_score"]),
        "threshold": float(result["stattest_threshold"]),
        "drifted": bool(result["drift_detected"]),
    }


def evidently_dataset(pd, np):
    """A frame of several columns, the dataset verdict by the default tests."""
    from evidently.legacy.metrics import DataDriftTable
    from evidently.legacy.pipeline.column_mapping import ColumnMapping
    from evidently.legacy.report import Report

    rng = np.random.default_rng(7)
    datasets = []
    for name, shifts in [("half_drifted", [0.0, 0.8, 0.8, 0.0]), ("one_of_four", [0.0, 0.0, 0.9, 0.0])]:
        reference = {f"f{i}": np.round(rng.normal(0, 1, 1200), 4).tolist() for i in range(4)}
        current = {f"f{i}": np.round(rng.normal(shift, 1, 800), 4).tolist() for i, shift in enumerate(shifts)}
        reference["segment"] = rng.choice(["a", "b"], 1200).tolist()
        current["segment"] = rng.choice(["a", "b"], 800).tolist()
        mapping = ColumnMapping(
            target=None,
            prediction=None,
            numerical_features=[f"f{i}" for i in range(4)],
            categorical_features=["segment"],
        )
        report = Report(metrics=[DataDriftTable()])
        report.run(reference_data=pd.DataFrame(reference), current_data=pd.DataFrame(current), column_mapping=mapping)
        result = report.as_dict()["metrics"][0]["result"]
        datasets.append(
            {
                "name": name,
                "kinds": {**{f"f{i}": "numeric" for i in range(4)}, "segment": "categorical"},
                "reference": reference,
                "current": current,
                "dataset_drift": bool(result["dataset_drift"]),
                "share_drifted": float(result["share_of_drifted_columns"]),
                "columns": {
                    column: {"score": float(value["drift_score"]), "drifted": bool(value["drift_detected"])}
                    for column, value in result["drift_by_columns"].items()
                },
            }
        )
    return datasets


def main():
    ensure_venv()
    if "--only-venv" in sys.argv:  # bench/monitoring.py only needs the environment
        return
    import warnings

    import evidently
    import numpy as np
    import pandas as pd
    import scipy

    warnings.filterwarnings("ignore")
    cases = make_cases(np)
    for case in cases:
        methods = NUMERIC_METHODS if case["kind"] == "numeric" else CATEGORICAL_METHODS
        case["evidently"] = [evidently_column(pd, case, method) for method in methods]
        print(case["name"], [(r["method"], r.get("score", r.get("error", ""))) for r in case["evidently"]])
    golden = {
        "evidently": evidently.__version__,
        "pandas": pd.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "regenerate": "python3 bench/evidently_golden.py",
        "cases": cases,
        "datasets": evidently_dataset(pd, np),
    }
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    # One case per line: a regenerated file's diff names the cases whose numbers moved.
    lines = [json.dumps({key: value for key, value in golden.items() if key not in ("cases", "datasets")})[:-1]]
    for key in ("cases", "datasets"):
        items = ",\n".join(json.dumps(item) for item in golden[key])
        lines.append(f', "{key}": [\n{items}\n]')
    OUTPUT.write_text("\n".join(lines) + "}\n")
    print(f"wrote {OUTPUT} ({len(cases)} columns, Evidently {evidently.__version__})")


if __name__ == "__main__":
    main()
