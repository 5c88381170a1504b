"""DICOM writers for synthetic 3D volumes: a series of single-frame MR (or CT) Image Storage
slices, or one multi-frame Legacy Converted Enhanced MR (CT) object built by highdicom.

Geometry comes from the volume's RAS affine (NIfTI convention; array ``(C, D, H, W)`` is
nibabel's voxel ``(i, j, k)`` reversed), converted to DICOM's LPS:

- Image Orientation (Patient): the directions of increasing column (``i``) and row (``j``)
  index; Pixel Spacing: (row spacing, column spacing) = (``|A[:, 1]|``, ``|A[:, 0]|``);
- Image Position (Patient) of slice ``k``: ``A @ (0, 0, k, 1)``; Slice Thickness and Spacing
  Between Slices: the distance between neighbouring slice planes;
- one Frame of Reference per volume; slices are numbered in voxel order (Instance Number
  ``k + 1``), so :func:`medsynth.imaging.dicom_series.read_dicom_series` gives back the affine.

Every object says that it is synthetic: Image Type ``DERIVED\\SECONDARY\\OTHER`` (CT:
``AXIAL``), Derivation Description, Burned In Annotation ``NO``, Patient Identity
Removed ``YES`` with a de-identification method, the synthetic patient name and the sample id as
Patient ID; Manufacturer ``medsynth``. An MR object claims no acquisition: Scanning Sequence
``RM`` (research mode), Sequence Variant ``NONE``, the timing attributes present but empty.

UIDs: the run's study; per volume a series (another one for its enhanced object) and a frame of
reference derived from the study UID and the sample id (the same on resume), fresh SOP Instance
UIDs per file.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medsynth import __version__
from medsynth.artifacts import atomic_write_bytes
from medsynth.errors import MedsynthError
from medsynth.generate.writers.dicom import (
    DEIDENTIFICATION_METHOD,
    SYNTHETIC_PATIENT_NAME,
    DicomRunInfo,
    _ds,
    _lo,
    _lt,
    new_uid,
)
from medsynth.imaging.storage import Rescale

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
VOLUME_MODALITIES = {"MR": MR_IMAGE_STORAGE, "CT": CT_IMAGE_STORAGE}
"""Modalities a volume can be written as, with their single-frame storage SOP class."""
DICOM_VOLUME_LAYOUTS = ("series", "enhanced")
RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])


@dataclasses.dataclass(frozen=True)
class VolumeGeometry:
    """The DICOM geometry of a volume's voxel grid (all in LPS millimetres)."""

    row_direction: tuple[float, float, float]
    """Direction of increasing column index (the first three values of Image Orientation)."""
    column_direction: tuple[float, float, float]
    """Direction of increasing row index (the last three values of Image Orientation)."""
    pixel_spacing: tuple[float, float]
    """(row spacing, column spacing): the distance between rows, then between columns."""
    positions: tuple[tuple[float, float, float], ...]
    """Image Position (Patient) of each slice, in voxel order."""
    slice_spacing: float
    """Distance between neighbouring slice planes (along the slice normal)."""

    @classmethod
    def from_affine(cls, affine: np.ndarray, depth: int) -> VolumeGeometry:
        """From a RAS voxel-to-world affine of a ``(D, H, W)`` grid."""
        a = np.asarray(affine, dtype=np.float64)
        if a.shape != (4, 4) or not np.all(np.isfinite(a)):
            raise MedsynthError(f"a volume's affine must be a finite 4x4 matrix, got {a.shape}")
        lps = RAS_TO_LPS @ a[:3, :4]
        col_sp, row_sp = (float(np.linalg.norm(lps[:, k])) for k in (0, 1))
        if min(col_sp, row_sp) <= 0 or abs(np.linalg.det(lps[:, :3])) < 1e-9:
            raise MedsynthError("a volume's affine is singular (zero spacing or parallel axes)")
        rowdir, coldir = lps[:, 0] / col_sp, lps[:, 1] / row_sp
        if abs(float(rowdir @ coldir)) > 1e-4:
            raise MedsynthError("the in-plane axes of the volume's affine are not orthogonal; "
                                "DICOM Image Orientation needs perpendicular rows and columns")
        normal = np.cross(rowdir, coldir)
        step = abs(float(lps[:, 2] @ normal))
        positions = tuple(tuple(float(v) for v in lps[:, 3] + k * lps[:, 2]) for k in range(depth))
        return cls(tuple(float(v) for v in rowdir), tuple(float(v) for v in coldir),  # type: ignore[arg-type]
                   (row_sp, col_sp), positions, step)  # type: ignore[arg-type]

    @property
    def orientation(self) -> list[float]:
        return [*self.row_direction, *self.column_direction]

    @property
    def normal(self) -> np.ndarray:
        return np.cross(self.row_direction, self.column_direction)


def volume_affine(shape: Sequence[int], spacing: Sequence[float] | None = None,
                  affine: np.ndarray | Sequence[Sequence[float]] | None = None) -> np.ndarray:
    """The RAS affine a volume is written with: ``affine`` as given, else RAS axes at
    ``spacing`` ((D, H, W) order; 1 mm where unknown), centred on the world origin."""
    if affine is not None:
        return np.asarray(affine, dtype=np.float64)
    d, h, w = (int(s) for s in shape[-3:])
    sd, sh, sw = (float(s) for s in spacing) if spacing else (1.0, 1.0, 1.0)
    a = np.diag([sw, sh, sd, 1.0])
    a[:3, 3] = -a[:3, :3] @ np.array([(w - 1) / 2, (h - 1) / 2, (d - 1) / 2])
    return a


def derived_uid(*parts: str) -> str:
    """A UID that is the same for the same parts (e.g. study UID + sample id): resume-safe.

    ``2.25.<128-bit integer>`` (ISO/IEC 9834-8, UUID-derived), the integer from a SHA-256 of
    the parts, so it is as unique as the study UID it is made from.
    """
    import hashlib

    digest = hashlib.sha256("\x00".join(str(p) for p in parts).encode("utf-8")).digest()
    return f"2.25.{int.from_bytes(digest[:16], 'big')}"


def _pixels(volume: np.ndarray, rescale: Rescale | None) -> tuple[np.ndarray, dict[str, Any]]:
    """Stored pixels (D, H, W) and the Image Pixel / Modality LUT attributes of a volume."""
    if volume.dtype == np.uint8:
        return volume, {"BitsAllocated": 8, "PixelRepresentation": 0}
    if volume.dtype == np.uint16:
        return volume, {"BitsAllocated": 16, "PixelRepresentation": 0}
    if volume.dtype == np.int16:
        return volume, {"BitsAllocated": 16, "PixelRepresentation": 1}
    if volume.dtype == np.float32:
        if rescale is None:
            raise ValueError("float32 volumes need a rescale (stored-value map) for DICOM")
        return rescale.to_stored(volume), {"BitsAllocated": 16, "PixelRepresentation": 0,
                                           "RescaleSlope": _ds(rescale.slope),
                                           "RescaleIntercept": _ds(rescale.intercept)}
    raise ValueError(f"DICOM volumes need uint8, uint16, int16 or float32, got {volume.dtype}")


def slice_datasets(
    array: np.ndarray,
    *,
    run: DicomRunInfo,
    cls: str,
    sample_id: str,
    index: int,
    description: str,
    seed: int | None = None,
    affine: np.ndarray | Sequence[Sequence[float]] | None = None,
    spacing: Sequence[float] | None = None,
    rescale: Rescale | None = None,
) -> list[Any]:
    """One single-frame MR (CT) Image Storage dataset per slice of a (1, D, H, W) volume.

    Args:
        array: channel-first volume, (1, D, H, W) uint8/uint16/int16/float32.
        run: the run's study UID, dates, modality (MR or CT) and model name.
        cls: the class name (Series Description).
        sample_id: the sample id (Patient ID; with the study UID it makes the series UID).
        index: the sample's index within its class (the Series Number follows it).
        description: the text the volume was conditioned on (Image Comments).
        seed: the volume's seed (recorded in Derivation Description).
        affine: RAS voxel-to-world affine of the (D, H, W) grid; else built from ``spacing``.
        spacing: voxel spacing (D, H, W) in mm when there is no affine (1 mm when unknown).
        rescale: the stored-value map of float32 volumes (required for them).
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

    if array.ndim != 4 or array.shape[0] != 1:
        raise ValueError(f"DICOM volume writer needs (1, D, H, W) grayscale, got {array.shape}")
    modality = run.modality.upper()
    if modality not in VOLUME_MODALITIES:
        raise MedsynthError(
            f"DICOM volumes are written as MR or CT images; this model's modality is {modality}",
            hint="write --format nifti, or import the training data with --modality MR|CT")
    sop_class = VOLUME_MODALITIES[modality]
    volume = np.ascontiguousarray(array[0])
    depth, rows, cols = volume.shape
    geom = VolumeGeometry.from_affine(volume_affine(volume.shape, spacing, affine), depth)
    stored, pixel_attrs = _pixels(volume, rescale)
    values = volume.astype(np.float64) if rescale is None else rescale.to_values(stored)
    lo, hi = np.percentile(values, [0.5, 99.5])
    series_uid = derived_uid(run.study_uid, sample_id, "series")
    frame_uid = derived_uid(run.study_uid, sample_id, "frame-of-reference")
    series_number = int(run.series_numbers.get(cls, 1)) * 10000 + index + 1
    derivation = f"Synthetic volume of class {cls} generated by medsynth {__version__}"
    if seed is not None:
        derivation += f", seed {seed}"
    out = []
    for k in range(depth):
        ds = Dataset()
        sop_uid = new_uid()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = sop_class
        ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        ds.file_meta.ImplementationVersionName = f"medsynth {__version__}"[:16]
        # SOP Common
        ds.SpecificCharacterSet = "ISO_IR 192"  # UTF-8: descriptions may hold any character
        ds.SOPClassUID = sop_class
        ds.SOPInstanceUID = sop_uid
        ds.InstanceCreationDate, ds.InstanceCreationTime = run.study_date, run.study_time
        # Patient (synthetic), General Study
        ds.PatientName = SYNTHETIC_PATIENT_NAME
        ds.PatientID = _lo(sample_id)
        ds.PatientBirthDate = ""
        ds.PatientSex = ""
        ds.PatientIdentityRemoved = "YES"
        ds.DeidentificationMethod = DEIDENTIFICATION_METHOD
        ds.StudyInstanceUID = run.study_uid
        ds.StudyDate, ds.StudyTime = run.study_date, run.study_time
        ds.ReferringPhysicianName = ""
        ds.StudyID = "medsynth"
        ds.AccessionNumber = ""
        ds.StudyDescription = "medsynth synthetic images"
        # General Series, Frame of Reference, General Equipment
        ds.Modality = modality
        ds.SeriesInstanceUID = series_uid
        ds.SeriesNumber = series_number
        ds.SeriesDescription = _lo(f"synthetic {cls}") or "synthetic"
        ds.SeriesDate, ds.SeriesTime = run.study_date, run.study_time
        # Type 2C: a synthetic volume has no body side and no position on a table
        ds.Laterality = None
        ds.PatientPosition = None
        ds.FrameOfReferenceUID = frame_uid
        ds.PositionReferenceIndicator = ""
        ds.Manufacturer = "medsynth"
        ds.ManufacturerModelName = _lo(run.model_name or "medsynth model")
        ds.SoftwareVersions = f"medsynth {__version__}"
        # General Image
        ds.InstanceNumber = k + 1
        ds.ContentDate, ds.ContentTime = run.study_date, run.study_time
        ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL" if modality == "CT" else "OTHER"]
        ds.DerivationDescription = _lo(derivation, 1024)
        ds.ImageComments = _lt(description)
        ds.BurnedInAnnotation = "NO"
        ds.RecognizableVisualFeatures = "NO"
        ds.LossyImageCompression = "00"
        # Image Plane
        ds.PixelSpacing = [_ds(geom.pixel_spacing[0]), _ds(geom.pixel_spacing[1])]
        ds.ImageOrientationPatient = [_ds(v) for v in geom.orientation]
        ds.ImagePositionPatient = [_ds(v) for v in geom.positions[k]]
        ds.SliceThickness = _ds(geom.slice_spacing)
        ds.SpacingBetweenSlices = _ds(geom.slice_spacing)
        ds.SliceLocation = _ds(float(np.dot(geom.positions[k], geom.normal)))
        # Image Pixel
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = rows, cols
        ds.BitsAllocated = pixel_attrs["BitsAllocated"]
        ds.BitsStored = ds.BitsAllocated
        ds.HighBit = ds.BitsAllocated - 1
        ds.PixelRepresentation = pixel_attrs["PixelRepresentation"]
        if modality == "MR":
            # MR Image: a synthetic volume has no acquisition (type 2: present, empty)
            ds.ScanningSequence = "RM"
            ds.SequenceVariant = "NONE"
            ds.ScanOptions = ""
            ds.MRAcquisitionType = "3D"
            ds.RepetitionTime = ""
            ds.EchoTime = ""
            ds.EchoTrainLength = ""
            if "RescaleSlope" in pixel_attrs:
                ds.RescaleSlope = pixel_attrs["RescaleSlope"]
                ds.RescaleIntercept = pixel_attrs["RescaleIntercept"]
                ds.RescaleType = "US"
        else:
            # CT Image: Hounsfield units through the Modality LUT
            ds.RescaleSlope = pixel_attrs.get("RescaleSlope", "1")
            ds.RescaleIntercept = pixel_attrs.get("RescaleIntercept", "0")
            ds.RescaleType = "HU"
            ds.KVP = ""
            ds.AcquisitionNumber = ""
        # VOI LUT: a window a viewer can start from
        ds.WindowCenter = _ds(float((lo + hi) / 2))
        ds.WindowWidth = _ds(float(max(hi - lo, 1.0)))
        plane = np.ascontiguousarray(stored[k])
        ds.PixelData = plane.astype(plane.dtype.newbyteorder("<"), copy=False).tobytes()
        out.append(ds)
    return out


def _bytes(ds: Any) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def write_dicom_series(array: np.ndarray, folder: str | Path, **kwargs: Any) -> list[Path]:
    """Write a volume as one DICOM file per slice, ``folder/slice_0001.dcm`` ... (each file
    atomic); returns the paths in slice order. Keyword arguments: :func:`slice_datasets`."""
    folder = Path(folder)
    paths = []
    for k, ds in enumerate(slice_datasets(array, **kwargs)):
        paths.append(atomic_write_bytes(folder / f"slice_{k + 1:04d}.dcm", _bytes(ds)))
    return paths


def enhanced_dataset(array: np.ndarray, **kwargs: Any) -> Any:
    """The volume as one multi-frame Legacy Converted Enhanced MR (CT) Image object, made by
    highdicom from the single-frame slices (frames in slice order, one per slice)."""
    import warnings

    from highdicom.legacy import LegacyConvertedEnhancedCTImage, LegacyConvertedEnhancedMRImage

    slices = slice_datasets(array, **kwargs)
    first = slices[0]
    cls = LegacyConvertedEnhancedMRImage if first.Modality == "MR" else LegacyConvertedEnhancedCTImage
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # highdicom notes the attributes it does not carry over
        # Its own series (a converted object does not join the slices' series); the frame of
        # reference is shared: the same voxels in the same place.
        ds = cls(slices, series_instance_uid=derived_uid(first.SeriesInstanceUID, "enhanced"),
                 series_number=int(first.SeriesNumber), sop_instance_uid=new_uid(),
                 instance_number=1, include_dimension_index=False)
    # The single-frame slices are never written: drop the reference to their series (dciodvfy
    # wants referenced instances to exist in the study); the per-frame conversion source items
    # stay (mandatory in this IOD).
    if "ReferencedSeriesSequence" in ds:
        del ds.ReferencedSeriesSequence
    ds.Laterality = None  # type 2C, no body side (as in the slices)
    ds.FrameOfReferenceUID = first.FrameOfReferenceUID
    # Value 3 from the Enhanced MR/CT defined terms: one volume.
    frame_type = [str(v) for v in ds.ImageType[:2]] + ["VOLUME", "NONE"]
    ds.ImageType = frame_type
    shared = ds.SharedFunctionalGroupsSequence[0]
    for key in ("MRImageFrameTypeSequence", "CTImageFrameTypeSequence"):
        if key in shared:
            shared[key][0].FrameType = frame_type
    return ds


def write_dicom_enhanced(array: np.ndarray, path: str | Path, **kwargs: Any) -> Path:
    """Write a volume as one multi-frame DICOM file, atomically (see :func:`enhanced_dataset`)."""
    return atomic_write_bytes(path, _bytes(enhanced_dataset(array, **kwargs)))
