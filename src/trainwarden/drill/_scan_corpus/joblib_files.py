"""joblib dumps, plain and compressed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from trainwarden.drill._scan_corpus._base import Builder, _Clean, _evil, _Mal


def _joblib_dump(compress: Any) -> Builder:
    def build(path: Path, canary: Path) -> None:
        import joblib

        path.parent.mkdir(parents=True, exist_ok=True)
        joblib.dump({"model": _evil(canary)}, str(path), compress=compress)

    return build


def _joblib_model(kind: str) -> Callable[[Path], None]:
    def build(path: Path) -> None:
        import joblib
        import numpy as np
        from sklearn.ensemble import RandomForestClassifier  # type: ignore[import-untyped]
        from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped]
        from sklearn.pipeline import Pipeline  # type: ignore[import-untyped]
        from sklearn.preprocessing import StandardScaler  # type: ignore[import-untyped]

        rng = np.random.RandomState(0)
        x = rng.randn(40, 3)
        y = (x[:, 0] > 0).astype(int)
        model: Any
        compress: Any = 0
        if kind == "logreg":
            model = LogisticRegression().fit(x, y)
        elif kind == "forest":
            model = RandomForestClassifier(n_estimators=3, max_depth=2, random_state=0).fit(x, y)
        elif kind == "pipeline":
            model = Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression())]).fit(x, y)
        else:
            model = Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression())]).fit(x, y)
            compress = 3
        path.parent.mkdir(parents=True, exist_ok=True)
        joblib.dump(model, str(path), compress=compress)

    return build


def _sklearn_more(path: Path) -> None:
    import joblib
    import numpy as np
    from sklearn.cluster import KMeans  # type: ignore[import-untyped]
    from sklearn.compose import ColumnTransformer  # type: ignore[import-untyped]
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.preprocessing import OneHotEncoder
    from sklearn.svm import SVC  # type: ignore[import-untyped]
    from sklearn.tree import DecisionTreeRegressor  # type: ignore[import-untyped]

    rng = np.random.RandomState(0)
    x = rng.randn(30, 3)
    y = (x[:, 0] > 0).astype(int)
    cats = np.array([["a"], ["b"], ["a"]] * 10)
    models = {
        "kmeans": KMeans(n_clusters=2, n_init=1, random_state=0).fit(x),
        "svc": SVC(probability=False).fit(x, y),
        "tree": DecisionTreeRegressor(max_depth=2).fit(x, x[:, 1]),
        "gb": GradientBoostingClassifier(n_estimators=3, max_depth=1).fit(x, y),
        "ct": ColumnTransformer([("oh", OneHotEncoder(), [0])]).fit(cats),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    joblib.dump(models, str(path))


def malicious() -> list[_Mal]:
    """The malicious samples of this family."""
    return [
        _Mal(
            "joblib_plain",
            ".joblib",
            "joblib.dump of a payload",
            "joblib docs: never load untrusted",
            _joblib_dump(0),
            trigger="joblib",
        ),
        _Mal(
            "joblib_zlib",
            ".joblib",
            "joblib zlib-compressed payload",
            "joblib compress=('zlib', 3)",
            _joblib_dump(("zlib", 3)),
            trigger="joblib",
        ),
        _Mal(
            "joblib_gzip",
            ".joblib",
            "joblib gzip-compressed payload",
            "joblib compress=('gzip', 3)",
            _joblib_dump(("gzip", 3)),
            trigger="joblib",
        ),
        _Mal(
            "joblib_bz2",
            ".joblib",
            "joblib bz2-compressed payload",
            "joblib compress=('bz2', 3)",
            _joblib_dump(("bz2", 3)),
            trigger="joblib",
        ),
        _Mal(
            "joblib_xz",
            ".joblib",
            "joblib xz-compressed payload",
            "joblib compress=('xz', 3)",
            _joblib_dump(("xz", 3)),
            trigger="joblib",
        ),
        _Mal(
            "joblib_lzma",
            ".joblib",
            "joblib lzma-compressed payload",
            "joblib compress=('lzma', 3)",
            _joblib_dump(("lzma", 3)),
            trigger="joblib",
        ),
    ]


def clean() -> list[_Clean]:
    """The clean samples of this family (written by the real libraries)."""
    return [
        _Clean(
            "sklearn_logistic_regression",
            ".joblib",
            "joblib.dump(LogisticRegression)",
            _joblib_model("logreg"),
        ),
        _Clean(
            "sklearn_random_forest",
            ".joblib",
            "joblib.dump(RandomForestClassifier)",
            _joblib_model("forest"),
        ),
        _Clean(
            "sklearn_pipeline_scaler",
            ".joblib",
            "joblib.dump(Pipeline[StandardScaler, LR])",
            _joblib_model("pipeline"),
        ),
        _Clean(
            "sklearn_pipeline_compressed",
            ".joblib",
            "joblib.dump(..., compress=3)",
            _joblib_model("compressed"),
        ),
        _Clean(
            "sklearn_more_estimators",
            ".joblib",
            "joblib.dump of KMeans/SVC/DecisionTree/GradientBoosting/ColumnTransformer",
            _sklearn_more,
        ),
    ]
