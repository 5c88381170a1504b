"""The resolved configuration of one ``medsynth generate`` run (saved in ``SYNTH/medsynth.json``)."""

from __future__ import annotations

import dataclasses
from typing import Any

from medsynth.errors import BadUsageError
from medsynth.models.sampler import PRECISIONS, SAMPLERS

FORMATS = ("png", "dicom", "nifti")
CLASS_INPUTS = ("auto", "class", "text")
"""Where a CCELLA-mode model's class input comes from (``--class-input``)."""
DICOM_LAYOUTS = ("series", "enhanced")
"""DICOM of volumes: one file per slice, or one Legacy Converted Enhanced multi-frame file."""
SPLITS = ("train", "val", "test")
INIT_RESIZE = ("pad", "crop")
INIT_PAIRING = ("any", "same", "other")
IMAGE_PROMPT_FIELDS = ("init_images", "init_classes", "init_pairing", "splits", "strength", "init_resize", "twin",
                       "balance", "balance_target", "privacy_check")
"""Config fields of image prompts, twins and balancing (medsynth/generate/plans.py)."""
DEFAULT_STRENGTH = 0.7
"""--strength with --init-images when none is given (SDEdit; 1 = from noise)."""
EVERY_CLASS = "*"
"""--class value meaning every class of the model (always; ``all`` too, unless a class is named so)."""


@dataclasses.dataclass
class GenerateConfig:
    """Everything that decides which images a generation run writes."""

    model: str
    """Model folder written by ``medsynth train``."""
    out: str
    """Output folder (the synthetic set)."""
    classes: list[str] = dataclasses.field(default_factory=lambda: [EVERY_CLASS])
    """Class names to generate (``*`` = every class of the model; so is ``all`` unless the model
    has a class named ``all``); ignored with ``prompts_csv``."""
    n: int = 16
    """Images per requested class."""
    formats: list[str] = dataclasses.field(default_factory=lambda: ["png"])
    """Output formats: any of png, dicom, nifti."""
    prompt: str | None = None
    """One explicit description for every image (instead of retrieval from the store)."""
    store: str | None = None
    """Description store to retrieve random per-class descriptions from (default: the model's)."""
    prompts_csv: str | None = None
    """CSV with columns class, prompt, n: mixed batches (an empty prompt = retrieval)."""
    sampler: str = "dpmsolver++"
    """Sampler: one of :data:`medsynth.models.sampler.SAMPLERS` (dpmsolver++, ddim, ddpm, unipc)."""
    steps: int = 25
    """Denoising steps."""
    guidance: float = 3.0
    """Classifier-free guidance scale on class and text (1 = no guidance)."""
    seed: int = 0
    """Base seed; every image's own seed is derived from it, its class and its index."""
    batch_size: int = 16
    """Images denoised together (memory use is flat in n)."""
    ema: bool = True
    """Use the EMA weights (``unet/``) rather than the raw ones (``unet_raw/``)."""
    prototype_strength: float | None = None
    """Prototype Condition Mechanism strength in [0, 1] (None = the model's default)."""
    spacing: list[float] | None = None
    """Pixel spacing (rows, cols), or voxel spacing (slices, rows, cols) for 3D models, in mm
    for DICOM/NIfTI (None = from the model, else 1 mm)."""
    class_input: str = "auto"
    """CCELLA-mode models only: the class input is the requested class as a one-hot vector
    (``class``), the class the text head predicts from the description (``text``), or the text's
    where the image has a description, else the class (``auto``)."""
    decode_window: int | None = None
    """Latent models: decode window in latent voxels per axis (0 = whole latent at once; None =
    whole unless that needs more memory than the budget, then a window that fits)."""
    dicom_layout: str = "series"
    """3D models: DICOM as a series of single-slice files (a folder per volume) or one enhanced
    multi-frame file (``enhanced``)."""
    threads: int | None = None
    """CPU threads for torch (None = the free cores now, medsynth.threads.default_threads)."""
    precision: str = "auto"
    """The network's precision: ``fp32``, ``bf16`` (autocast) or ``auto`` (bf16 on CUDA and on
    CPUs with bf16 units, else fp32; medsynth.models.sampler.resolve_precision)."""
    compile: bool = False
    """``torch.compile`` the denoiser before sampling (a one-off compile, then faster steps)."""
    report: str = "template"
    """Report writer: ``template`` (offline, from the class and the conditioning attributes),
    ``llm`` (a model through the MLLM engine, template as the fallback) or ``none``."""
    report_backend: str = "openai"
    """llm writer: ``openai`` (an OpenAI-compatible server) or ``transformers`` (local model)."""
    report_model: str | None = None
    """llm writer: model name (openai) or local folder (transformers)."""
    report_base_url: str | None = None
    """llm writer, openai: the server's base URL (e.g. http://127.0.0.1:8000/v1)."""
    report_with_image: bool = False
    """llm writer: show the model the generated image too."""
    report_max_reasks: int = 2
    """llm writer: re-asks of an invalid report before the template report is used."""
    report_concurrency: int = 4
    """llm writer: requests in flight (openai) or per batch (transformers)."""
    # --- image prompts, twins, balancing (medsynth/generate/plans.py) --------------------------
    init_images: str | None = None
    """Image prompts: a dataset folder or a plain image folder; each sample starts from one of
    its images noised to ``strength`` (SDEdit)."""
    init_classes: list[str] = dataclasses.field(default_factory=list)
    """Source classes the init images are drawn from (empty = every source image)."""
    init_pairing: str = "any"
    """Which source images a sample of class C may start from: ``any``, ``same`` (class C:
    variations) or ``other`` (every class but C: class translation, as MAGIC)."""
    splits: list[str] = dataclasses.field(default_factory=lambda: ["train"])
    """Dataset splits the init images, the twin's real images and the balance counts come from."""
    strength: float | None = None
    """Share of the denoising schedule run from the init image, in (0, 1]; 1 = from noise.
    None = :data:`DEFAULT_STRENGTH` with ``init_images``, 1 for a twin."""
    init_resize: str = "pad"
    """How a non-square init image becomes square: ``pad`` (long side fits) or ``crop`` (short
    side fits), as ``medsynth data import --resize``."""
    twin: str | None = None
    """Synthetic twin of this dataset: one image per real image of ``splits``, same class."""
    balance: str | None = None
    """Balance this dataset: make what each class lacks so real (``splits``) + synthetic match."""
    balance_target: str = "max"
    """Images per class after balancing: ``max`` (the largest class) or a number."""
    privacy_check: bool = True
    """Twin: run the near-copy check on the result (medsynth.metrics.privacy)."""
    oversample: int = 1
    """Candidates made per requested image (K; same class and description, own seeds), for
    ``judge filter --per-request`` or ``--per-class-n`` to keep the best (generate/oversample.py)."""

    def __post_init__(self) -> None:
        self.formats = [f.strip().lower() for f in self.formats if f.strip()]
        bad = [f for f in self.formats if f not in FORMATS]
        if bad or not self.formats:
            raise BadUsageError(f"--format: unknown format(s) {bad or self.formats}; "
                                f"choose from {', '.join(FORMATS)}")
        self.formats = [f for f in FORMATS if f in self.formats]
        if self.sampler not in SAMPLERS:
            raise BadUsageError(f"--sampler {self.sampler!r}: choose from {', '.join(SAMPLERS)}")
        if self.n < 1:
            raise BadUsageError(f"--n must be at least 1, got {self.n}")
        if not 1 <= self.steps <= 1000:
            raise BadUsageError(f"--steps must be between 1 and 1000, got {self.steps}")
        if self.guidance < 0:
            raise BadUsageError(f"--guidance must be >= 0, got {self.guidance}")
        if self.batch_size < 1:
            raise BadUsageError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.prototype_strength is not None and not 0 <= self.prototype_strength <= 1:
            raise BadUsageError(f"--prototype-strength must be in [0, 1], got {self.prototype_strength}")
        if self.prompt is not None and self.prompts_csv is not None:
            raise BadUsageError("--prompt and --prompts-csv exclude each other")
        if self.prompt is not None and self.store is not None:
            raise BadUsageError("--prompt and --store exclude each other (one fixed description "
                                "or random stored ones)")
        if not self.classes and self.prompts_csv is None:
            raise BadUsageError("give --class NAME (repeatable, or 'all') or --prompts-csv FILE")
        if self.oversample < 1:
            raise BadUsageError(f"--oversample must be at least 1, got {self.oversample}")
        if self.precision not in PRECISIONS:
            raise BadUsageError(f"--precision must be one of {', '.join(PRECISIONS)}, got "
                                f"{self.precision!r}")
        if self.threads is not None and self.threads < 1:
            raise BadUsageError(f"--threads must be at least 1, got {self.threads}")
        from medsynth.generate.reports import writer_config

        writer_config(self)  # validates the report options (one line naming the option)
        if self.spacing is not None and (len(self.spacing) not in (2, 3) or min(self.spacing) <= 0):
            raise BadUsageError(f"--spacing needs two positive numbers (rows, cols), or three "
                                f"(slices, rows, cols) for volumes, got {self.spacing}")
        if self.class_input not in CLASS_INPUTS:
            raise BadUsageError(f"--class-input must be one of {', '.join(CLASS_INPUTS)}, got "
                                f"{self.class_input!r}")
        if self.decode_window is not None and self.decode_window < 0:
            raise BadUsageError(f"--decode-window must be >= 0, got {self.decode_window}")
        if self.dicom_layout not in DICOM_LAYOUTS:
            raise BadUsageError(f"--dicom-layout must be one of {', '.join(DICOM_LAYOUTS)}, got "
                                f"{self.dicom_layout!r}")
        self._check_image_prompts()

    def _check_image_prompts(self) -> None:
        """Options of image prompts, twins and balancing (defaults resolved here)."""
        modes = [o for o, v in (("--init-images", self.init_images), ("--twin", self.twin),
                                ("--balance", self.balance)) if v]
        if "--twin" in modes and len(modes) > 1:
            raise BadUsageError(f"--twin excludes {' and '.join(m for m in modes if m != '--twin')}"
                                " (a twin starts from its own real images: add --strength)")
        if (self.twin or self.balance) and self.prompts_csv is not None:
            raise BadUsageError(f"{modes[0]} and --prompts-csv exclude each other (the counts "
                                "come from the dataset)")
        if self.strength is not None and not 0.0 < self.strength <= 1.0:
            raise BadUsageError(f"--strength must be in (0, 1] (1 = from noise), got {self.strength}")
        if self.strength is not None and not (self.init_images or self.twin):
            raise BadUsageError("--strength needs --init-images or --twin (the images to start from)")
        if (self.init_classes or self.init_pairing != "any") and not self.init_images:
            raise BadUsageError("--init-class and --init-pairing need --init-images")
        if self.init_pairing not in INIT_PAIRING:
            raise BadUsageError(f"--init-pairing must be one of {', '.join(INIT_PAIRING)}, "
                                f"got {self.init_pairing!r}")
        if self.strength is None and (self.init_images or self.twin):
            self.strength = DEFAULT_STRENGTH if self.init_images else 1.0
        if self.init_resize not in INIT_RESIZE:
            raise BadUsageError(f"--init-resize must be one of {', '.join(INIT_RESIZE)}, "
                                f"got {self.init_resize!r}")
        self.splits = [p.strip().lower() for s in self.splits for p in s.split(",") if p.strip()]
        bad = [s for s in self.splits if s not in SPLITS]
        if bad or not self.splits:
            raise BadUsageError(f"--split: unknown split(s) {bad or self.splits}; choose from "
                                f"{', '.join(SPLITS)}")
        target = str(self.balance_target).strip().lower()
        if target != "max":
            try:
                n = int(target)
            except ValueError:
                n = 0
            if n < 1:
                raise BadUsageError(f"--target must be 'max' or a positive number of images per "
                                    f"class, got {self.balance_target!r}")
            target = str(n)
        self.balance_target = target

    def identity(self) -> dict[str, Any]:
        """The fields a resumed run must share with the run it continues (not batch size, nor
        how the network runs: samples.csv records each image's precision)."""
        d = dataclasses.asdict(self)
        for k in ("batch_size", "out", "threads", "precision", "compile"):
            d.pop(k)
        if not (self.init_images or self.twin or self.balance):
            for k in IMAGE_PROMPT_FIELDS:  # runs without them resume as before they existed
                d.pop(k)
        return d
