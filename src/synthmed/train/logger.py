"""Training logs a person and TensorBoard can read: ``metrics.csv`` and TensorBoard event files."""

from __future__ import annotations

import csv
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter

from synthmed.io_utils import naming_path


class MetricsLogger:
    """Append scalar rows to a CSV and to TensorBoard.

    On resume the CSV is cut back to ``start_step`` and TensorBoard purges later events, so a run
    that was killed and resumed has one clean history.
    """

    def __init__(self, csv_path: Path, tb_dir: Path, start_step: int = 0) -> None:
        self.csv_path = csv_path
        self.columns: list[str] | None = None
        if start_step > 0 and csv_path.is_file():
            self._truncate(start_step)
        elif csv_path.exists():
            csv_path.unlink()
        self.tb = SummaryWriter(str(tb_dir), purge_step=start_step if start_step > 0 else None)

    def _truncate(self, step: int) -> None:
        with open(self.csv_path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
        if not rows:
            return
        self.columns = rows[0]
        keep = [rows[0]] + [r for r in rows[1:] if r and int(r[0]) <= step]
        with open(self.csv_path, "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows(keep)

    def log(self, step: int, values: dict[str, float]) -> None:
        with naming_path(self.csv_path):  # a failed write (disk full) names the CSV
            self._log_csv(step, values)
        for k, v in values.items():
            self.tb.add_scalar(k, v, step)

    def _log_csv(self, step: int, values: dict[str, float]) -> None:
        if self.columns is None:
            self.columns = ["step", *values]
            with open(self.csv_path, "w", newline="", encoding="utf-8") as f:
                csv.writer(f).writerow(self.columns)
        elif any(k not in self.columns for k in values):
            self._add_columns([k for k in values if k not in self.columns])
        with open(self.csv_path, "a", newline="", encoding="utf-8") as f:
            # a value not measured at this step (a preview-time metric between previews) is an empty cell
            csv.writer(f).writerow([step, *(f"{values[c]:.6g}" if c in values else "" for c in self.columns[1:])])

    def _add_columns(self, new: list[str]) -> None:
        """A value seen for the first time (a guard that fired, a preview-time metric): rewrite the CSV
        with the new columns, empty in the earlier rows."""
        assert self.columns is not None
        with open(self.csv_path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
        self.columns = [*self.columns, *new]
        body = [r + [""] * len(new) for r in rows[1:]]
        tmp = self.csv_path.with_name(self.csv_path.name + ".tmp")
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows([self.columns, *body])
        tmp.replace(self.csv_path)

    def close(self) -> None:
        self.tb.flush()
        self.tb.close()
