"""Real model improvers on scikit-learn's bundled digits, exported to ONNX.

The tests, the demo and the benchmark need models of clearly different quality
on real data, trained offline with fixed seeds. Each example is a scikit-learn
pipeline fitted on a problem's *train* split only (never on its test or holdout
inputs), converted with skl2onnx and cut down to one output: the ``(N, C)``
float32 class-probability tensor that PROVE and VERIFY read (the sandbox scores
a model's first output).

- ``weak``: 4 principal components, then logistic regression (~80% accuracy).
- ``linear``: logistic regression on all 64 pixels (~95%).
- ``mlp``: standardised pixels, then a 64-unit MLP fitted with L-BFGS (~97%).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Final

import numpy as np

from daimon_node.errors import DaimonError

SEED: Final[int] = 0
EXAMPLES: Final[tuple[str, ...]] = ("weak", "linear", "mlp")


class ExampleError(DaimonError):
    """An example model name is unknown or its training data do not fit."""


@dataclass(frozen=True)
class ExampleModel:
    name: str
    onnx_bytes: bytes
    train_accuracy: float


def _pipeline(name: str):  # type: ignore[no-untyped-def]
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    builders: dict[str, Callable[[], object]] = {
        "weak": lambda: make_pipeline(PCA(n_components=4, random_state=SEED), LogisticRegression(max_iter=2000)),
        "linear": lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.1)),
        "mlp": lambda: make_pipeline(
            StandardScaler(),
            MLPClassifier(hidden_layer_sizes=(64,), solver="lbfgs", max_iter=300, alpha=1e-3, random_state=SEED),
        ),
    }
    if name not in builders:
        raise ExampleError(f"unknown example model {name!r}; expected one of {', '.join(EXAMPLES)}")
    return builders[name]()


def to_onnx_scores(model: object, num_features: int) -> bytes:
    """Export a fitted classifier to ONNX with one output: float32 probabilities ``(N, C)``.

    skl2onnx emits a label output and a probability output (a plain tensor with
    ``zipmap`` off); the graph is cut to the probabilities so the first output
    is the score tensor and nothing else is computed.
    """
    import onnx
    import onnx.utils
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    onx = convert_sklearn(
        model,
        initial_types=[("input", FloatTensorType([None, num_features]))],
        options={id(model): {"zipmap": False}},
        target_opset=17,
    )
    prob = [o.name for o in onx.graph.output if "prob" in o.name]
    if len(prob) != 1:
        raise ExampleError(f"cannot find the probability output among {[o.name for o in onx.graph.output]}")
    cut = onnx.utils.Extractor(onx).extract_model(["input"], prob)
    cut.producer_name = "daimon-node examples"
    onnx.checker.check_model(cut)
    return cut.SerializeToString()


def train_example(name: str, x_train: np.ndarray, y_train: np.ndarray, num_classes: int) -> ExampleModel:
    """Fit example ``name`` on the train split and export it (deterministic for fixed data)."""
    if x_train.ndim != 2 or len(x_train) != len(y_train):
        raise ExampleError(f"train inputs {x_train.shape} do not fit labels {y_train.shape}")
    if set(np.unique(y_train).tolist()) != set(range(num_classes)):
        raise ExampleError("the train split must contain every class")
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    from threadpoolctl import threadpool_limits

    model = _pipeline(name)
    # One BLAS thread: on a busy machine a thread pool per core makes these small fits 10x slower.
    with warnings.catch_warnings(), threadpool_limits(1):
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x_train.astype(np.float32), y_train)  # type: ignore[attr-defined]
    acc = float((model.predict(x_train.astype(np.float32)) == y_train).mean())  # type: ignore[attr-defined]
    return ExampleModel(name, to_onnx_scores(model, x_train.shape[1]), acc)


def write_examples(
    out_dir: Path, x_train: np.ndarray, y_train: np.ndarray, num_classes: int, names: tuple[str, ...] = EXAMPLES
) -> dict[str, Path]:
    """Train and write ``<name>.onnx`` for each example; return the paths by name."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in names:
        example = train_example(name, x_train, y_train, num_classes)
        path = out_dir / f"{name}.onnx"
        path.write_bytes(example.onnx_bytes)
        paths[name] = path
    return paths


__all__ = ["EXAMPLES", "ExampleModel", "ExampleError", "train_example", "to_onnx_scores", "write_examples"]
