"""The shared image I/O layer (no stage): readers of PNG/TIFF/DICOM/NIfTI files and dataset folders,
DICOM series and NIfTI volumes, transforms, resampling and orthogonal views of volumes, modality
rules, storage and saving of images, duplicate and split groups of a dataset table.

Read by every stage (``data`` ingests through it; describe, train, generate, evaluate, judge and
refine read datasets through it); it imports no stage.
"""
