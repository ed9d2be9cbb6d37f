"""The ilastik-style baseline every benchmark compares with: filter features + random forest."""

from __future__ import annotations

import time

import numpy as np


def random_forest(image: np.ndarray, strokes: np.ndarray,
                  sigma_max: float = 16) -> tuple[np.ndarray, float]:
    """Fit a random forest on the painted pixels; return its class map and the seconds taken.

    What ilastik's pixel classifier does: 100 trees on
    ``skimage.feature.multiscale_basic_features`` (intensity, edges, texture at sigmas
    0.7..``sigma_max``, in as many dimensions as ``image`` has). The time covers features,
    fit and prediction of the whole image.
    """
    from skimage.feature import multiscale_basic_features
    from sklearn.ensemble import RandomForestClassifier

    t0 = time.perf_counter()
    features = multiscale_basic_features(image.astype(np.float32), sigma_min=0.7,
                                         sigma_max=sigma_max)
    painted = strokes > 0
    forest = RandomForestClassifier(n_estimators=100, n_jobs=-1, random_state=0)
    forest.fit(features[painted], strokes[painted])
    class_map = forest.predict(features.reshape(-1, features.shape[-1])).reshape(strokes.shape)
    return class_map, time.perf_counter() - t0
