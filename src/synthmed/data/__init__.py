"""synthmed.data: readers, preprocessing, splits and the prepared-dataset format.

Importing this package fills :data:`synthmed.registry.READERS` (``nifti``, ``bids``, ``dicom``,
``images``, ``medmnist``, ``auto``).
"""

from synthmed.data import medmnist, readers  # noqa: F401  (register the readers)
from synthmed.data.prepared import PreparedDataset, Record, load_prepared, write_prepared
from synthmed.data.readers import RawSubject, detect_reader

__all__ = ["PreparedDataset", "RawSubject", "Record", "detect_reader", "load_prepared", "write_prepared"]
