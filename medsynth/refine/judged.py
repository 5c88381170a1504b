"""A judged folder (written by ``medsynth judge``) read for refine, with its lineage checked.

The folder's manifest (stage ``judge``) names the synthetic set it judged; the set is opened
through :func:`medsynth.synthset.open_synthetic` and its images are read from there. Refine
only accepts a judged folder of a set that the model being refined generated: the set's
lineage must lead to that model's manifest (same sha256) and every image's ``model_sha256``
must be the model's.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medsynth.artifacts import Manifest, read_jsonl, read_manifest, resolve_input
from medsynth.errors import MedsynthError
from medsynth.synthset import SyntheticSet, open_synthetic

SCORES_CSV = "scores.csv"
VERDICTS = "verdicts.jsonl"
CRITERIA = "criteria.yaml"


@dataclasses.dataclass
class JudgedSet:
    """A judged synthetic set: the set, its scores, and how it was judged."""

    root: Path
    manifest: Manifest
    synth: SyntheticSet
    table: pd.DataFrame
    """One row per judged image: samples.csv columns plus ``score`` and ``image_valid``."""

    @property
    def criteria_file(self) -> Path:
        """The criteria file the judge used (copied verbatim into the folder)."""
        return self.root / CRITERIA

    @property
    def backend(self) -> str:
        return str(self.manifest.config.get("backend", "measure"))

    @property
    def criteria_sha256(self) -> str | None:
        v = self.manifest.config.get("criteria_sha256")
        return str(v) if v else None

    def generation(self) -> dict[str, Any]:
        """Sampler, steps, guidance, prototype strength and EMA choice the set was made with."""
        cfg = self.synth.manifest.config
        t = self.synth.table

        def col(name: str, default: Any) -> Any:
            if name in t.columns and t[name].notna().any():
                return t[name].dropna().iloc[0]
            return cfg.get(name, default)

        return {"sampler": str(col("sampler", "dpmsolver++")), "steps": int(col("steps", 25)),
                "guidance": float(col("guidance", 3.0)),
                "prototype_strength": cfg.get("prototype_strength"),
                "ema": bool(cfg.get("ema", True))}


def _synth_input(manifest: Manifest) -> Path:
    """The folder of the synthetic set a judged folder's manifest names."""
    refs = [r for r in manifest.inputs if r.get("stage") == "generate"] or \
        [r for r in manifest.inputs if r.get("stage") not in ("train", "refine", "data",
                                                              "describe")]
    if not refs:
        raise MedsynthError(f"{manifest.folder}: its manifest names no synthetic set as input")
    return resolve_input(manifest, refs[0])


def _scores(root: Path) -> pd.DataFrame:
    """sample_id, class, score, image_valid from scores.csv (or verdicts.jsonl)."""
    csv = root / SCORES_CSV
    if csv.is_file():
        try:
            t = pd.read_csv(csv, keep_default_na=False, na_values=[""], dtype={"sample_id": str})
        except Exception as e:
            raise MedsynthError(f"{csv}: cannot read ({e})") from e
    elif (root / VERDICTS).is_file():
        t = pd.DataFrame(read_jsonl(root / VERDICTS))
    else:
        raise MedsynthError(f"{root}: no {SCORES_CSV} or {VERDICTS} (not a judged folder?)")
    where = csv if csv.is_file() else root / VERDICTS
    missing = [c for c in ("sample_id", "score") if c not in t.columns]
    if missing:
        raise MedsynthError(f"{where}: missing columns {missing}")
    if t.empty:
        raise MedsynthError(f"{where}: holds no verdicts")
    t["sample_id"] = t["sample_id"].astype(str)
    if t["sample_id"].duplicated().any():
        dup = t.loc[t["sample_id"].duplicated(), "sample_id"].iloc[0]
        raise MedsynthError(f"{where}: sample {dup} is judged twice")
    score = pd.to_numeric(t["score"], errors="coerce")
    if score.isna().any() or ((score < 0) | (score > 1)).any():
        bad = t.loc[score.isna() | (score < 0) | (score > 1), "sample_id"].iloc[0]
        raise MedsynthError(f"{where}: sample {bad} has no score in [0, 1]")
    t["score"] = score.astype(float)
    if "image_valid" not in t.columns:
        t["image_valid"] = True
    t["image_valid"] = [str(v).strip().lower() in ("1", "true", "yes", "1.0")
                        if not isinstance(v, (bool, np.bool_)) else bool(v)
                        for v in t["image_valid"]]
    keep = ["sample_id", "score", "image_valid"] + (["class"] if "class" in t.columns else [])
    return t[keep]


def open_judged(path: str | Path, *, model_sha256: str | None = None,
                model_path: str | Path | None = None) -> JudgedSet:
    """Open a judged folder and its synthetic set; check both belong to the model when given.

    Raises:
        MedsynthError: not a judged folder, set missing or changed since it was judged, scores
            that do not match the set's images, or images of another model.
    """
    root = Path(path)
    manifest = read_manifest(root, "judge")
    synth_dir = _synth_input(manifest)
    if not synth_dir.is_dir():
        raise MedsynthError(f"{root}: the synthetic set it judged ({synth_dir}) is gone",
                            hint="refine needs the judged images: keep the set beside its "
                                 "judged folder")
    synth = open_synthetic(synth_dir)
    ref = next((r for r in manifest.inputs if resolve_input(manifest, r) == synth_dir), {})
    if ref.get("sha256") and ref["sha256"] != synth.manifest.sha256:
        raise MedsynthError(f"{root}: the synthetic set {synth_dir} changed after it was judged "
                            "(its manifest's sha256 differs from the one recorded)",
                            hint="judge the set again")
    scores = _scores(root)
    samples = synth.table.copy()
    samples["sample_id"] = samples["sample_id"].astype(str)
    unknown = sorted(set(scores["sample_id"]) - set(samples["sample_id"]))
    if unknown:
        raise MedsynthError(f"{root}: judges sample {unknown[0]}, which is not in "
                            f"{synth_dir / 'samples.csv'} ({len(unknown)} unknown)")
    merged = samples.merge(scores.rename(columns={"class": "judged_class"}), on="sample_id",
                           how="inner")
    if "judged_class" in merged.columns:
        wrong = merged[merged["judged_class"].astype(str) != merged["class"].astype(str)]
        if len(wrong):
            r = wrong.iloc[0]
            raise MedsynthError(f"{root}: sample {r['sample_id']} is class {r['class']!r} in the "
                                f"set but {r['judged_class']!r} in the verdicts")
        merged = merged.drop(columns=["judged_class"])
    if model_sha256 is not None:
        _check_model(root, synth, merged, model_sha256, model_path)
    return JudgedSet(root=root, manifest=manifest, synth=synth, table=merged)


def _check_model(root: Path, synth: SyntheticSet, table: pd.DataFrame, sha: str,
                 model_path: str | Path | None) -> None:
    gen = synth.lineage.generator
    name = f" {model_path}" if model_path is not None else ""
    hint = f"judge a set generated by{name or ' the model'}: medsynth generate{name} ... then " \
           "medsynth judge"
    if gen is None:
        raise MedsynthError(f"{root}: the model that generated {synth.root} cannot be found "
                            f"({'; '.join(synth.lineage.problems) or 'no model input'})",
                            hint=hint)
    if gen.sha256 != sha:
        raise MedsynthError(f"{root}: judges images of another model ({gen.folder}), not of "
                            f"the model being refined{name}", hint=hint)
    if "model_sha256" in table.columns:
        other = table[table["model_sha256"].notna() & (table["model_sha256"].astype(str) != sha)]
        if len(other):
            raise MedsynthError(f"{root}: sample {other.iloc[0]['sample_id']} was made by another "
                                "model (samples.csv model_sha256 differs)", hint=hint)
