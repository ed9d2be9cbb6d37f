"""A small loss curve drawn with QPainter (no plotting library needed)."""

from __future__ import annotations

import math

from qtpy.QtCore import QPointF, Qt
from qtpy.QtGui import QColor, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import QSizePolicy, QWidget

_MAX_POINTS = 2000


class LossPlot(QWidget):
    """Training loss against step, log scale, newest on the right."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.losses: list[float] = []
        self.setMinimumHeight(80)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setToolTip("training loss (log scale)")

    def append(self, loss: float) -> None:
        if math.isfinite(loss) and loss > 0:
            self.losses.append(loss)
            if len(self.losses) > _MAX_POINTS:  # keep drawing cheap on long runs
                self.losses = self.losses[::2]
            self.update()

    def clear(self) -> None:
        self.losses = []
        self.update()

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt's name
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor(38, 41, 48))
        if len(self.losses) < 2:
            painter.setPen(QColor(150, 150, 150))
            painter.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, "loss")
            return
        logs = [math.log10(v) for v in self.losses]
        low, high = min(logs), max(logs)
        span = max(high - low, 1e-6)
        w, h, pad = self.width(), self.height(), 6
        points = QPolygonF([
            QPointF(pad + (w - 2 * pad) * i / (len(logs) - 1),
                    pad + (h - 2 * pad) * (high - v) / span)
            for i, v in enumerate(logs)
        ])
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setPen(QPen(QColor(0, 200, 255), 1.5))
        painter.drawPolyline(points)
        painter.setPen(QColor(200, 200, 200))
        painter.drawText(pad, h - pad, f"{self.losses[-1]:.3f}")
