"""Local `evaluate` modules, loaded by path so no Hub access is needed: `load_metric("accuracy")`."""

from pathlib import Path

METRICS_DIR = Path(__file__).parent


def metric_path(name: str) -> str:
    path = METRICS_DIR / name
    if not (path / f"{name}.py").exists():
        available = sorted(p.name for p in METRICS_DIR.iterdir() if (p / f"{p.name}.py").exists())
        raise ValueError(f"no local metric {name!r}; available: {available}")
    return str(path)


def load_metric(name: str):
    import evaluate

    return evaluate.load(metric_path(name))
