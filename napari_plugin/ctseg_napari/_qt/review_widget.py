"""The *Review segmentation* dock widget: window presets, a table of structures, accept/flag with notes, Save.

Editing is napari's own (the Labels layer's paint, erase and fill tools); selecting a row selects that label for
painting, double-clicking it moves the view to the structure. The statistics refresh shortly after each paint
stroke. The logic (statistics, review state, saving) is in :mod:`ctseg_napari._review`.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import Qt, QTimer
from qtpy.QtGui import QColor, QIcon, QPixmap
from qtpy.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ctseg.errors import CtsegError
from ctseg.preprocess import WINDOW_PRESETS
from ctseg_napari._labels import napari_colormap, stem_of
from ctseg_napari._layers import LayerSource, layer_meta, lps_to_world, source_volume, volume_of_layer
from ctseg_napari._qt.segment_widget import image_layers
from ctseg_napari._review import STATUSES, ReviewSession, SavedReview, StructureRow, save_review, structure_rows
from ctseg_napari._writer import label_names

if TYPE_CHECKING:
    import napari

log = logging.getLogger(__name__)

#: Presets offered, in button order (keys of :data:`ctseg.preprocess.WINDOW_PRESETS`).
PRESETS = ("soft_tissue", "lung", "bone", "brain", "liver")
COLUMNS = ("Show", "Structure", "mL", "Mean HU", "Status", "Note")
SHOW, NAME, VOLUME, MEAN, STATUS, NOTE = range(len(COLUMNS))
SWATCH_PX = 12
#: Wait this long after the last paint stroke before recomputing statistics.
REFRESH_DELAY_MS = 600
REVIEWED_SUFFIX = "_reviewed.nii.gz"


def labels_layers(viewer: napari.Viewer) -> list[Any]:
    """The viewer's 3D Labels layers."""
    from napari.layers import Labels

    return [layer for layer in viewer.layers if isinstance(layer, Labels) and layer.ndim == 3]


class ReviewWidget(QWidget):
    """Dock widget for reviewing one mask over one CT."""

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.review = ReviewSession()
        self.rows: list[StructureRow] = []
        self.hidden: set[int] = set()
        self.colors: dict[int, tuple[int, int, int]] = {}
        self._labels_layer: Any = None
        self._refresh_timer = QTimer(self)
        self._refresh_timer.setSingleShot(True)
        self._refresh_timer.setInterval(REFRESH_DELAY_MS)
        self._refresh_timer.timeout.connect(self.refresh_stats)

        self.image_combo = QComboBox()
        self.labels_combo = QComboBox()
        self.labels_combo.currentTextChanged.connect(self._labels_changed)
        self.image_combo.currentTextChanged.connect(lambda _: self.refresh_stats())
        form = QFormLayout()
        form.addRow("CT layer", self.image_combo)
        form.addRow("Mask layer", self.labels_combo)

        presets = QGridLayout()
        self.preset_buttons: dict[str, QPushButton] = {}
        for i, key in enumerate(PRESETS):
            button = QPushButton(key.replace("_", " ").capitalize())
            level, width = WINDOW_PRESETS[key]
            button.setToolTip(f"level {level:g} HU, width {width:g} HU")
            button.clicked.connect(lambda _=False, k=key: self.set_window(k))
            presets.addWidget(button, i // 3, i % 3)
            self.preset_buttons[key] = button

        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        rows_header, header = self.table.verticalHeader(), self.table.horizontalHeader()
        if rows_header is not None and header is not None:  # always, for a QTableWidget
            rows_header.setVisible(False)
            header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
            header.setSectionResizeMode(NOTE, QHeaderView.ResizeMode.Stretch)
        self.table.itemChanged.connect(self._item_changed)
        self.table.itemSelectionChanged.connect(self._select_label)
        self.table.cellDoubleClicked.connect(lambda row, _col: self.go_to(self.rows[row].label))

        self.save_edit = QLineEdit()
        self.save_edit.setPlaceholderText("mask file to write (.nii.gz)")
        browse = QPushButton("…")
        browse.clicked.connect(self._browse)
        refresh = QPushButton("Refresh")
        refresh.clicked.connect(self.refresh_stats)
        self.save_button = QPushButton("Save")
        self.save_button.clicked.connect(self.save)
        save_row = QHBoxLayout()
        save_row.addWidget(self.save_edit)
        save_row.addWidget(browse)
        save_row.addWidget(self.save_button)
        self.status = QLabel("")
        self.status.setWordWrap(True)

        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(QLabel("Window"))
        layout.addLayout(presets)
        layout.addWidget(self.table, 1)
        layout.addWidget(refresh)
        layout.addLayout(save_row)
        layout.addWidget(self.status)

        events = self.viewer.layers.events
        for event in (events.inserted, events.removed, events.moved):
            event.connect(self.refresh_layers)
        self.refresh_layers()

    # -- layers --------------------------------------------------------------------------------------------
    def refresh_layers(self, event: Any = None) -> None:
        """Re-list CT and mask layers, keeping the choices that still exist (the newest mask otherwise)."""
        for combo, layers in (
            (self.image_combo, image_layers(self.viewer)),
            (self.labels_combo, labels_layers(self.viewer)),
        ):
            current = combo.currentText()
            names = [layer.name for layer in layers]
            combo.blockSignals(True)
            combo.clear()
            combo.addItems(names)
            if current in names:
                combo.setCurrentText(current)
            elif names:
                combo.setCurrentIndex(len(names) - 1)
            combo.blockSignals(False)
        if self.labels_combo.currentText() != getattr(self._labels_layer, "name", None):
            self._labels_changed(self.labels_combo.currentText())

    def image_layer(self) -> Any:
        """The chosen CT layer, or None."""
        name = self.image_combo.currentText()
        return self.viewer.layers[name] if name and name in self.viewer.layers else None

    def labels_layer(self) -> Any:
        """The chosen mask layer, or None."""
        name = self.labels_combo.currentText()
        return self.viewer.layers[name] if name and name in self.viewer.layers else None

    def _labels_changed(self, name: str) -> None:
        if self._labels_layer is not None:
            self._labels_layer.events.paint.disconnect(self._schedule_refresh)
        layer = self.labels_layer()
        self._labels_layer = layer
        self.hidden.clear()
        if layer is None:
            self.review, self.colors = ReviewSession(), {}
            self._fill_table([])
            return
        layer.events.paint.connect(self._schedule_refresh)
        _, source = volume_of_layer(layer.data, layer_meta(layer))
        self.review = ReviewSession.for_names(label_names(layer_meta(layer), source))
        self.colors = dict(source.colors)
        self.save_edit.setText(str(self.default_save_path(source)))
        self.refresh_stats()

    def default_save_path(self, source: LayerSource) -> Path:
        """``<mask stem>_reviewed.nii.gz`` beside the mask file; beside the CT (never inside a DICOM folder)."""
        if source.path and Path(source.path).is_file():
            return Path(source.path).with_name(stem_of(Path(source.path)) + REVIEWED_SUFFIX)
        image = self.image_layer()
        image_path = image.metadata["ctseg"].path if image is not None and "ctseg" in image.metadata else ""
        if image_path:
            p = Path(image_path)
            return p.parent / (stem_of(p) + "_mask" + REVIEWED_SUFFIX)
        return Path.home() / ("mask" + REVIEWED_SUFFIX)

    def _schedule_refresh(self, event: Any = None) -> None:
        self._refresh_timer.start()

    # -- window --------------------------------------------------------------------------------------------
    def set_window(self, preset: str) -> None:
        """Set the CT layer's contrast limits to a preset of :data:`ctseg.preprocess.WINDOW_PRESETS`."""
        layer = self.image_layer()
        if layer is None:
            self.status.setText("No CT layer to window.")
            return
        level, width = WINDOW_PRESETS[preset]
        low, high = level - width / 2, level + width / 2
        lo_range, hi_range = layer.contrast_limits_range
        layer.contrast_limits_range = (min(lo_range, low), max(hi_range, high))
        layer.contrast_limits = (low, high)

    # -- statistics and table ------------------------------------------------------------------------------
    def _volumes(self) -> tuple[Any, LayerSource, Any]:
        layer = self.labels_layer()
        _, source = volume_of_layer(layer.data, layer_meta(layer))
        labels = source_volume(layer.data, source)
        image = self.image_layer()
        ct = None
        if image is not None:
            _, image_source = volume_of_layer(image.data, layer_meta(image))
            ct = source_volume(image.data, image_source)
            if not source.dicom_dir and image_source.dicom_dir and source.geometry.is_close(image_source.geometry):
                source = dataclasses.replace(
                    source,
                    dicom_dir=image_source.dicom_dir,
                    series_uid=image_source.series_uid,
                    dicom_series=image_source.dicom_series,
                )
        return labels, source, ct

    def refresh_stats(self) -> None:
        """Recompute volumes and mean HU of every structure and redraw the table."""
        layer = self.labels_layer()
        if layer is None:
            self._fill_table([])
            return
        labels, source, ct = self._volumes()
        names = {**{k: e.name for k, e in self.review.items.items()}, **label_names(layer_meta(layer), source)}
        present = np.flatnonzero(np.bincount(np.asarray(labels.array).ravel().astype(np.int64, copy=False)))
        for k in [*names, *(int(v) for v in present if v)]:
            if k not in self.colors:
                rgba = np.asarray(layer.get_color(k) if layer.get_color(k) is not None else (0.5, 0.5, 0.5, 1.0))
                self.colors[k] = (int(round(rgba[0] * 255)), int(round(rgba[1] * 255)), int(round(rgba[2] * 255)))
        self.rows, _ = structure_rows(labels, ct, names, self.colors)
        self._fill_table(self.rows)

    def _fill_table(self, rows: list[StructureRow]) -> None:
        self.table.blockSignals(True)
        self.table.setRowCount(len(rows))
        for i, row in enumerate(rows):
            entry = self.review.item(row.label, row.name)
            show = QTableWidgetItem()
            show.setFlags(Qt.ItemFlag.ItemIsUserCheckable | Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable)
            show.setCheckState(Qt.CheckState.Unchecked if row.label in self.hidden else Qt.CheckState.Checked)
            swatch = QPixmap(SWATCH_PX, SWATCH_PX)
            swatch.fill(QColor(*row.color))
            show.setIcon(QIcon(swatch))
            self.table.setItem(i, SHOW, show)
            mean = "" if row.mean_hu is None else f"{row.mean_hu:.1f}"
            for col, text in ((NAME, f"{row.label}: {row.name}"), (VOLUME, f"{row.volume_ml:.2f}"), (MEAN, mean)):
                item = QTableWidgetItem(text)
                item.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable)
                if col != NAME:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.table.setItem(i, col, item)
            combo = QComboBox()
            combo.addItems(STATUSES)
            combo.setCurrentText(entry.status)
            combo.currentTextChanged.connect(lambda status, k=row.label: self.set_status(k, status))
            self.table.setCellWidget(i, STATUS, combo)
            self.table.setItem(i, NOTE, QTableWidgetItem(entry.note))
        self.table.blockSignals(False)

    def _item_changed(self, item: QTableWidgetItem) -> None:
        label = self.rows[item.row()].label
        if item.column() == SHOW:
            self.set_visible(label, item.checkState() == Qt.CheckState.Checked)
        elif item.column() == NOTE:
            self.review.set_note(label, item.text())

    def _select_label(self) -> None:
        model = self.table.selectionModel()
        selected = model.selectedRows() if model is not None else []
        layer = self.labels_layer()
        if selected and layer is not None:
            layer.selected_label = self.rows[selected[0].row()].label

    # -- actions -------------------------------------------------------------------------------------------
    def set_status(self, label: int, status: str) -> None:
        """Accept, flag or reset a structure (and keep the table's combo box in step)."""
        self.review.set_status(label, status)
        for i, row in enumerate(self.rows):
            combo = self.table.cellWidget(i, STATUS)
            if row.label == label and isinstance(combo, QComboBox) and combo.currentText() != status:
                combo.setCurrentText(status)

    def set_note(self, label: int, note: str) -> None:
        """Set a structure's note (and the table's note cell)."""
        for i, row in enumerate(self.rows):
            item = self.table.item(i, NOTE)
            if row.label == label and item is not None:
                item.setText(note)  # -> _item_changed -> review.set_note
                return
        self.review.set_note(label, note)

    def set_visible(self, label: int, visible: bool) -> None:
        """Show or hide one structure (its colour becomes transparent; the voxels are untouched)."""
        (self.hidden.discard if visible else self.hidden.add)(label)
        layer = self.labels_layer()
        if layer is not None:
            layer.colormap = napari_colormap(self.colors, self.hidden)
        for i, row in enumerate(self.rows):
            item = self.table.item(i, SHOW)
            state = Qt.CheckState.Checked if visible else Qt.CheckState.Unchecked
            if row.label == label and item is not None and item.checkState() != state:
                self.table.blockSignals(True)
                item.setCheckState(state)
                self.table.blockSignals(False)

    def go_to(self, label: int) -> None:
        """Move the view's slice to a structure's centre and select its label for painting."""
        for row in self.rows:
            if row.label == label and row.centre_lps_mm is not None:
                world = lps_to_world(row.centre_lps_mm)
                self.viewer.dims.set_point(range(self.viewer.dims.ndim - 3, self.viewer.dims.ndim), world.tolist())
        layer = self.labels_layer()
        if layer is not None:
            layer.selected_label = label

    def _browse(self) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self, "Save reviewed mask", self.save_edit.text(), "NIfTI (*.nii.gz *.nii)"
        )
        if path:
            self.save_edit.setText(path)

    def save(self, path: str | Path | None = None) -> SavedReview | None:
        """Write mask, label sidecar, DICOM SEG (DICOM source) and review record; see :mod:`ctseg_napari._review`."""
        layer = self.labels_layer()
        target = Path(path or self.save_edit.text().strip())
        if layer is None or not str(target):
            self.status.setText("Nothing to save: choose a mask layer and a file name.")
            return None
        self.refresh_stats()
        labels, source, _ = self._volumes()
        image = self.image_layer()
        image_path = image.metadata["ctseg"].path if image is not None and "ctseg" in image.metadata else ""
        try:
            saved = save_review(
                target,
                labels.with_array(np.ascontiguousarray(labels.array)),
                source,
                self.review,
                self.rows,
                image_path=image_path,
            )
        except (CtsegError, OSError, ValueError) as exc:
            self.status.setText(f"Not saved: {exc}")
            return None
        seg = f", {saved.dicom_seg.name}" if saved.dicom_seg else ""
        note = f" ({saved.dicom_seg_note})" if saved.dicom_seg_note else ""
        self.status.setText(f"Saved {saved.mask.name}{seg}, {saved.review.name}{note}.")
        return saved
