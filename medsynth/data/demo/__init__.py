"""Built-in demo datasets: procedural PHANTOM images with known ground truth.

``derm``: RGB dermoscopy-like lesions (melanoma, nevus, seborrheic keratosis) following the ABCD
rule. ``cxr``: 16-bit PA chest radiograph-like images (normal, pneumonia, pleural effusion,
cardiomegaly). Write one with :func:`medsynth.data.demo.common.write_demo` or
``medsynth data demo derm|cxr --out DIR``. Nothing heavy is imported here.
"""
