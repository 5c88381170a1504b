"""The resolved configuration of one ``medsynth generate`` run (saved in ``SYNTH/medsynth.json``).

A pydantic model: the rules between options live here (not in the command), so the Python API
refuses the same combinations with the same one-line messages as ``medsynth generate``.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Self

from pydantic import ConfigDict, Field, field_validator, model_validator

from medsynth.choices import (
    ClassInput,
    DicomLayout,
    Format,
    InitPairing,
    InitResize,
    Precision,
    ReportBackend,
    ReportWriter,
    Sampler,
    Split,
    choice_list,
    values,
)
from medsynth.recipe import Recipe

FORMATS = values(Format)
CLASS_INPUTS = values(ClassInput)
"""Where a CCELLA-mode model's class input comes from (``--class-input``)."""
DICOM_LAYOUTS = values(DicomLayout)
"""DICOM of volumes: one file per slice, or one Legacy Converted Enhanced multi-frame file."""
SPLITS = values(Split)
INIT_RESIZE = values(InitResize)
INIT_PAIRING = values(InitPairing)
IMAGE_PROMPT_FIELDS = ("init_images", "init_classes", "init_pairing", "splits", "strength",
                       "init_resize", "twin", "balance", "balance_target", "privacy_check")
"""Config fields of image prompts, twins and balancing (medsynth/generate/plans.py)."""
DEFAULT_STRENGTH = 0.7
"""--strength with --init-images when none is given (SDEdit; 1 = from noise)."""
EVERY_CLASS = "*"
"""--class value meaning every class of the model (always; ``all`` too, unless a class is named so)."""

PosInt = Annotated[int, Field(ge=1)]
NonNegInt = Annotated[int, Field(ge=0)]
NonNegFloat = Annotated[float, Field(ge=0)]


class GenerateConfig(Recipe):
    """Everything that decides which images a generation run writes."""

    model_config = ConfigDict(strict=False)
    option_names: ClassVar[dict[str, str] | None] = {
        "classes": "--class", "formats": "--format", "splits": "--split", "n": "--n",
        "init_classes": "--init-class", "balance_target": "--target", "ema": "--raw-weights"}

    model: str
    """Model folder written by ``medsynth train``."""
    out: str
    """Output folder (the synthetic set)."""
    classes: list[str] = Field(default_factory=lambda: [EVERY_CLASS])
    """Class names to generate (``*`` = every class of the model; so is ``all`` unless the model
    has a class named ``all``); ignored with ``prompts_csv``."""
    n: PosInt = 16
    """Images per requested class."""
    formats: list[Format] = Field(default_factory=lambda: list[Format](["png"]))
    """Output formats: any of png, dicom, nifti."""
    prompt: str | None = None
    """One explicit description for every image (instead of retrieval from the store)."""
    store: str | None = None
    """Description store to retrieve random per-class descriptions from (default: the model's)."""
    prompts_csv: str | None = None
    """CSV with columns class, prompt, n: mixed batches (an empty prompt = retrieval)."""
    sampler: Sampler = "dpmsolver++"
    """Sampler: one of :data:`medsynth.models.sampler.SAMPLERS` (dpmsolver++, ddim, ddpm, unipc)."""
    steps: Annotated[int, Field(ge=1, le=1000)] = 25
    """Denoising steps."""
    guidance: NonNegFloat = 3.0
    """Classifier-free guidance scale on class and text (1 = no guidance)."""
    seed: int = 0
    """Base seed; every image's own seed is derived from it, its class and its index."""
    batch_size: PosInt = 16
    """Images denoised together (memory use is flat in n)."""
    ema: bool = True
    """Use the EMA weights (``unet/``) rather than the raw ones (``unet_raw/``)."""
    prototype_strength: Annotated[float, Field(ge=0, le=1)] | None = None
    """Prototype Condition Mechanism strength in [0, 1] (None = the model's default)."""
    spacing: list[float] | None = None
    """Pixel spacing (rows, cols), or voxel spacing (slices, rows, cols) for 3D models, in mm
    for DICOM/NIfTI (None = from the model, else 1 mm)."""
    class_input: ClassInput = "auto"
    """CCELLA-mode models only: the class input is the requested class as a one-hot vector
    (``class``), the class the text head predicts from the description (``text``), or the text's
    where the image has a description, else the class (``auto``)."""
    decode_window: NonNegInt | None = None
    """Latent models: decode window in latent voxels per axis (0 = whole latent at once; None =
    whole unless that needs more memory than the budget, then a window that fits)."""
    dicom_layout: DicomLayout = "series"
    """3D models: DICOM as a series of single-slice files (a folder per volume) or one enhanced
    multi-frame file (``enhanced``)."""
    threads: PosInt | None = None
    """CPU threads for torch (None = the free cores now, medsynth.threads.default_threads)."""
    precision: Precision = "auto"
    """The network's precision: ``fp32``, ``bf16`` (autocast) or ``auto`` (bf16 on CUDA and on
    CPUs with bf16 units, else fp32; medsynth.models.sampler.resolve_precision)."""
    compile: bool = False
    """``torch.compile`` the denoiser before sampling (a one-off compile, then faster steps)."""
    report: ReportWriter = "template"
    """Report writer: ``template`` (offline, from the class and the conditioning attributes),
    ``llm`` (a model through the MLLM engine, template as the fallback) or ``none``."""
    report_backend: ReportBackend = "openai"
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
    init_classes: list[str] = Field(default_factory=list)
    """Source classes the init images are drawn from (empty = every source image)."""
    init_pairing: InitPairing = "any"
    """Which source images a sample of class C may start from: ``any``, ``same`` (class C:
    variations) or ``other`` (every class but C: class translation, as MAGIC)."""
    splits: list[Split] = Field(default_factory=lambda: list[Split](["train"]))
    """Dataset splits the init images, the twin's real images and the balance counts come from."""
    strength: float | None = None
    """Share of the denoising schedule run from the init image, in (0, 1]; 1 = from noise.
    None = :data:`DEFAULT_STRENGTH` with ``init_images``, 1 for a twin."""
    init_resize: InitResize = "pad"
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
    oversample: PosInt = 1
    """Candidates made per requested image (K; same class and description, own seeds), for
    ``judge filter --per-request`` or ``--per-class-n`` to keep the best (generate/oversample.py)."""

    @field_validator("formats", mode="before")
    @classmethod
    def _formats(cls, v: Any) -> list[str]:
        given = choice_list(v, FORMATS, option="--format", noun="format")
        return [f for f in FORMATS if f in given]

    @field_validator("splits", mode="before")
    @classmethod
    def _splits(cls, v: Any) -> list[str]:
        return choice_list(v, SPLITS, option="--split", noun="split")

    @field_validator("strength")
    @classmethod
    def _strength(cls, v: float | None) -> float | None:
        if v is not None and not 0.0 < v <= 1.0:
            raise ValueError(f"--strength must be in (0, 1] (1 = from noise), got {v}")
        return v

    @field_validator("balance_target", mode="before")
    @classmethod
    def _balance_target(cls, v: Any) -> str:
        target = str(v).strip().lower()
        if target == "max":
            return target
        try:
            n = int(target)
        except ValueError:
            n = 0
        if n < 1:
            raise ValueError(f"--target must be 'max' or a positive number of images per class, "
                             f"got {v!r}")
        return str(n)

    @model_validator(mode="after")
    def _rules(self) -> Self:
        """The rules between options (the command's and the Python API's)."""
        given = self.model_fields_set
        modes = [o for o, v in (("--init-images", self.init_images), ("--twin", self.twin),
                                ("--balance", self.balance)) if v]
        if "splits" in given and not modes:
            raise ValueError("--split needs --init-images, --twin or --balance (the dataset whose "
                             "split it names)")
        if "balance_target" in given and not self.balance:
            raise ValueError("--target needs --balance")
        if "n" in given and (self.twin or self.balance):
            raise ValueError(f"--n does not go with {'--twin' if self.twin else '--balance'}: the "
                             "dataset's counts decide how many images each class gets")
        if self.prompts_csv is not None and "classes" not in given:
            self.classes = []  # the CSV names the classes
        if self.prompt is not None and self.prompts_csv is not None:
            raise ValueError("--prompt and --prompts-csv exclude each other")
        if self.prompt is not None and self.store is not None:
            raise ValueError("--prompt and --store exclude each other (one fixed description or "
                             "random stored ones)")
        if not self.classes and self.prompts_csv is None:
            raise ValueError("give --class NAME (repeatable, or 'all') or --prompts-csv FILE")
        from medsynth.generate.reports import writer_config

        writer_config(self)  # validates the report options (one line naming the option)
        if self.spacing is not None and (len(self.spacing) not in (2, 3) or min(self.spacing) <= 0):
            raise ValueError(f"--spacing needs two positive numbers (rows, cols), or three "
                             f"(slices, rows, cols) for volumes, got {self.spacing}")
        # image prompts, twins and balancing (defaults resolved here)
        if "--twin" in modes and len(modes) > 1:
            raise ValueError(f"--twin excludes {' and '.join(m for m in modes if m != '--twin')}"
                             " (a twin starts from its own real images: add --strength)")
        if (self.twin or self.balance) and self.prompts_csv is not None:
            raise ValueError(f"{modes[0]} and --prompts-csv exclude each other (the counts come "
                             "from the dataset)")
        if self.strength is not None and not (self.init_images or self.twin):
            raise ValueError("--strength needs --init-images or --twin (the images to start from)")
        if (self.init_classes or self.init_pairing != "any") and not self.init_images:
            raise ValueError("--init-class and --init-pairing need --init-images")
        if self.strength is None and (self.init_images or self.twin):
            self.strength = DEFAULT_STRENGTH if self.init_images else 1.0
        return self

    def identity(self) -> dict[str, Any]:
        """The fields a resumed run must share with the run it continues (not batch size, nor
        how the network runs: samples.csv records each image's precision)."""
        d = self.to_dict()
        for k in ("batch_size", "out", "threads", "precision", "compile"):
            d.pop(k)
        if not (self.init_images or self.twin or self.balance):
            for k in IMAGE_PROMPT_FIELDS:  # runs without them resume as before they existed
                d.pop(k)
        return d
