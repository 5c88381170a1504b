"""Class names of the common MedMNIST sets (from their ``INFO`` tables), keyed by file stem."""

from __future__ import annotations

MEDMNIST_CLASSES: dict[str, list[str]] = {
    "dermamnist": [
        "actinic_keratosis", "basal_cell_carcinoma", "benign_keratosis", "dermatofibroma",
        "melanoma", "nevus", "vascular_lesion",
    ],
    "pathmnist": [
        "adipose", "background", "debris", "lymphocytes", "mucus", "smooth_muscle",
        "normal_colon_mucosa", "cancer_associated_stroma", "colorectal_adenocarcinoma_epithelium",
    ],
    "bloodmnist": [
        "basophil", "eosinophil", "erythroblast", "immature_granulocytes", "lymphocyte",
        "monocyte", "neutrophil", "platelet",
    ],
    "breastmnist": ["malignant", "normal_benign"],
    "pneumoniamnist": ["normal", "pneumonia"],
    "octmnist": ["choroidal_neovascularization", "diabetic_macular_edema", "drusen", "normal"],
    "retinamnist": ["grade_0", "grade_1", "grade_2", "grade_3", "grade_4"],
    "organamnist": [
        "bladder", "femur_left", "femur_right", "heart", "kidney_left", "kidney_right", "liver",
        "lung_left", "lung_right", "pancreas", "spleen",
    ],
    "tissuemnist": [
        "collecting_duct_connecting_tubule", "distal_convoluted_tubule", "glomerular_endothelial_cells",
        "interstitial_endothelial_cells", "leukocytes", "podocytes", "proximal_tubule_segments",
        "thick_ascending_limb",
    ],
}


def medmnist_classes(stem: str) -> list[str] | None:
    """Known class names for a file such as ``dermamnist_64.npz`` (size suffix ignored)."""
    key = stem.lower().split("_")[0]
    return MEDMNIST_CLASSES.get(key)
