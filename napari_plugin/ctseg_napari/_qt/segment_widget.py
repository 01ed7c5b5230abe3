"""The *Segment CT* dock widget: pick a model folder and an image layer, run ``ctseg.segment`` off the GUI thread.

The work runs in a napari ``thread_worker``; progress arrives through a Qt signal (queued into the GUI thread) and
Cancel sets an event that the progress callback turns into :class:`~ctseg_napari._segment.SegmentationCancelled`.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import QObject, Signal
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ctseg_napari._layers import layer_meta, volume_of_layer
from ctseg_napari._remote import is_server_url, run_remote_segmentation
from ctseg_napari._segment import SegmentationCancelled, SegmentationResult, result_layer, run_segmentation

if TYPE_CHECKING:
    import napari

log = logging.getLogger(__name__)

DEVICES = ("cpu", "auto")
#: "auto" runs the fastest `ctseg export` variant that passed its accuracy gate (on the CPU), else torch.
RUNTIMES = ("auto", "torch", "openvino", "onnxruntime")


class _Progress(QObject):
    """Carries ``(done, total)`` from the worker thread to the GUI thread (a queued connection)."""

    changed = Signal(int, int)


def image_layers(viewer: napari.Viewer) -> list[Any]:
    """The viewer's 3D Image layers, in layer-list order."""
    from napari.layers import Image

    return [layer for layer in viewer.layers if isinstance(layer, Image) and layer.ndim == 3 and not layer.rgb]


def _segment_unless_cancelled(image: Any, model_dir: Path | str, **kwargs: Any) -> SegmentationResult | None:
    """The worker's function: a result, or None when the user cancelled (a cancel is not an error to report).
    A ``str`` is a ``ctseg serve`` URL (token from ``CTSEG_SERVE_TOKEN``); the server's model does the work."""
    try:
        if isinstance(model_dir, str):
            kwargs.pop("device", None)  # the server's device and runtime do the work
            kwargs.pop("runtime", None)
            token = os.environ.get("CTSEG_SERVE_TOKEN")
            return run_remote_segmentation(image, model_dir, token=token, **kwargs)
        return run_segmentation(image, model_dir, **kwargs)
    except SegmentationCancelled:
        return None


class SegmentWidget(QWidget):
    """Dock widget: model folder, image layer, device, Run / Cancel, progress bar and status line."""

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.worker: Any = None
        self._cancel = threading.Event()
        self._progress = _Progress()
        self._progress.changed.connect(self._on_progress)

        self.model_edit = QLineEdit()
        self.model_edit.setPlaceholderText("model folder (model.pt + model.json) or ctseg serve URL")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        model_row = QHBoxLayout()
        model_row.addWidget(self.model_edit)
        model_row.addWidget(browse)
        self.image_combo = QComboBox()
        self.device_combo = QComboBox()
        self.device_combo.addItems(DEVICES)
        self.runtime_combo = QComboBox()
        self.runtime_combo.addItems(RUNTIMES)
        self.run_button = QPushButton("Segment")
        self.run_button.clicked.connect(self.start)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        self.status = QLabel("Pick a model folder and a CT layer.")
        self.status.setWordWrap(True)

        form = QFormLayout()
        form.addRow("Model", model_row)
        form.addRow("CT layer", self.image_combo)
        form.addRow("Device", self.device_combo)
        form.addRow("Runtime", self.runtime_combo)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.status)
        layout.addStretch(1)

        events = self.viewer.layers.events
        for event in (events.inserted, events.removed, events.moved):
            event.connect(self.refresh_layers)
        self.refresh_layers()

    # -- layer list ----------------------------------------------------------------------------------------
    def refresh_layers(self, event: Any = None) -> None:
        """Re-list the 3D image layers, keeping the current choice when it still exists."""
        current = self.image_combo.currentText()
        names = [layer.name for layer in image_layers(self.viewer)]
        self.image_combo.blockSignals(True)
        self.image_combo.clear()
        self.image_combo.addItems(names)
        if current in names:
            self.image_combo.setCurrentText(current)
        self.image_combo.blockSignals(False)

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "ctseg model folder", self.model_edit.text())
        if folder:
            self.model_edit.setText(folder)

    # -- running -------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start segmenting the chosen layer in a worker thread (no-op while one runs)."""
        from napari.qt.threading import create_worker

        if self.worker is not None:
            return
        name = self.image_combo.currentText()
        model_dir = self.model_edit.text().strip()
        if not name or name not in self.viewer.layers:
            self.status.setText("No CT layer: open a CT (File > Open, or drop a DICOM folder) first.")
            return
        if not model_dir:
            self.status.setText("No model folder: pick the folder ctseg train wrote (model.pt + model.json).")
            return
        layer = self.viewer.layers[name]
        try:
            volume, source = volume_of_layer(layer.data, layer_meta(layer))
        except (ValueError, ArithmeticError) as exc:
            self.status.setText(f"Cannot use layer {name!r}: {exc}")
            return
        self._cancel.clear()
        self._source, self._image_name = source, name
        self.worker = create_worker(
            _segment_unless_cancelled,
            volume,
            model_dir if is_server_url(model_dir) else Path(model_dir),
            device=self.device_combo.currentText(),
            runtime=self.runtime_combo.currentText(),
            progress=self._progress.changed.emit,
            cancel=self._cancel,
            _connect={"returned": self._on_returned, "errored": self._on_errored, "finished": self._on_finished},
            _start_thread=False,
        )
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress_bar.setRange(0, 0)  # busy until the first window reports
        self.status.setText(f"Segmenting {name}…")
        self.worker.start()

    def cancel(self) -> None:
        """Ask the running segmentation to stop after its current batch of windows."""
        if self.worker is not None:
            self._cancel.set()
            self.status.setText("Cancelling…")

    def _on_progress(self, done: int, total: int) -> None:
        self.progress_bar.setRange(0, max(total, 1))
        self.progress_bar.setValue(done)

    def _on_returned(self, result: SegmentationResult | None) -> None:
        if result is None:
            self.status.setText("Cancelled; no mask was added.")
            return
        name = f"{self._image_name} labels"
        data, kwargs, _ = result_layer(result, self._source, name)
        layer = self.viewer.add_labels(data, **kwargs)
        counts = np.bincount(np.asarray(data).ravel(), minlength=max(result.names, default=0) + 1)
        n = sum(1 for k in result.names if counts[k])
        self.status.setText(f"Done: {layer.name} ({n} of {len(result.names)} structures found).")

    def _on_errored(self, exc: BaseException) -> None:
        log.warning("segmentation failed", exc_info=exc)
        self.status.setText(f"Failed: {exc}")

    def _on_finished(self) -> None:
        self.worker = None
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(1 if self.status.text().startswith("Done") else 0)
