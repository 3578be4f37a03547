"""The DICOM objects the node sends back to the PACS, in the study of the input (same
StudyInstanceUID, patient and study attributes copied, a new series each):

- a Secondary Capture of the clinician image (RGB, burned-in annotation: probability, decision,
  saliency overlay, intended use), built by highdicom's `SCImage.from_ref_dataset`;
- an Enhanced Structured Report (highdicom `EnhancedSR`) carrying the decision, the probability and
  the threshold, the device name and version (model sha256) and each reason of a rejection.

UIDs are derived from the input's SOPInstanceUID and the model sha256, so sending a result again
(after a restart) replaces the same instance in the PACS instead of adding a copy.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from . import dicom

DEVICE_NAME = "Pneumonia chest X-ray triage (CADt)"
MANUFACTURER = "Pneumonia triage validation toolkit"
SC_SERIES_NUMBER, SR_SERIES_NUMBER = 9901, 9902
#: Local coding scheme of the concepts without a standard code.
LOCAL_SCHEME = "99PNEUTRIAGE"
#: The input attributes an object needs to join the study (the Patient and General Study modules).
STUDY_KEYWORDS = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID",
                  "StudyDate", "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName",
                  "StudyDescription", "SpecificCharacterSet")


def result_uid(source_sop: str, kind: str, model_sha256: str) -> str:
    """The UID of a result object: the same for the same input, kind and model."""
    return generate_uid(entropy_srcs=[str(source_sop), kind, model_sha256])


def study_reference(header: Dataset) -> Dataset:
    """A copy of the input's Patient and General Study attributes (Type 2 ones present, maybe empty)
    plus its SOP class and instance (for the SR's evidence), each re-formed to its VR
    (`model.dicom_values.conform`: an invalid UID replaced by one derived from it, text truncated)."""
    from .dicom_values import conform

    ref = Dataset()
    for keyword in STUDY_KEYWORDS:
        value = conform(keyword, header.get(keyword))
        if value is not None or keyword not in ("SpecificCharacterSet", "StudyDescription"):
            setattr(ref, keyword, "" if value is None else value)
    for keyword in ("SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID", "Modality"):
        setattr(ref, keyword, conform(keyword, header.get(keyword)) or "")
    return ref


def secondary_capture(png_path: str | Path, header: Dataset, model_sha256: str) -> Dataset:
    """The clinician PNG as a Secondary Capture in the input's study (highdicom-built)."""
    import highdicom as hd
    from PIL import Image

    rgb = np.asarray(Image.open(png_path).convert("RGB"), dtype=np.uint8)
    source = str(header.SOPInstanceUID)
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=study_reference(header), pixel_array=rgb, photometric_interpretation="RGB",
        bits_allocated=8, coordinate_system="PATIENT", patient_orientation=("L", "F"),
        series_instance_uid=result_uid(source, "sc-series", model_sha256), series_number=SC_SERIES_NUMBER,
        sop_instance_uid=result_uid(source, "sc", model_sha256), instance_number=1,
        manufacturer=MANUFACTURER, transfer_syntax_uid="1.2.840.10008.1.2.1")
    # A composed figure (two panels and text), not an image in patient space: orientation unknown
    # (Type 2, empty); highdicom asks for one to build the object.
    sc.PatientOrientation = ""
    sc.Laterality = ""  # Type 2C: a chest radiograph, not a paired body part
    sc.BurnedInAnnotation = "YES"
    sc.ImageType = ["DERIVED", "SECONDARY"]
    sc.SeriesDescription = "Pneumonia triage result (not for diagnosis)"
    return sc


def structured_report(header: Dataset, result: dict, *, status: str, device_version: str,
                      model_sha256: str) -> Dataset:
    """An Enhanced SR with the triage result: decision, probability and threshold (when the image
    was analyzed), device name and version, and every rejection reason."""
    import highdicom as hd
    from pydicom.sr.coding import Code

    relation = hd.sr.RelationshipTypeValues.CONTAINS
    local = lambda value, meaning: hd.sr.CodedConcept(value, LOCAL_SCHEME, meaning)  # noqa: E731
    items = [
        hd.sr.TextContentItem(Code("111001", "DCM", "Algorithm Name"), DEVICE_NAME, relation),
        hd.sr.TextContentItem(Code("111003", "DCM", "Algorithm Version"), device_version[:1024], relation),
        hd.sr.TextContentItem(local("STATUS", "Triage status"), status, relation),
        hd.sr.TextContentItem(Code("121071", "DCM", "Finding"), decision_text(status, result), relation),
    ]
    no_units = hd.sr.CodedConcept("1", "UCUM", "no units")
    if result.get("probability") is not None:
        items += [
            hd.sr.NumContentItem(local("PROB", "Pneumonia probability"), float(result["probability"]),
                                 unit=no_units, relationship_type=relation),
            hd.sr.NumContentItem(local("THRESH", "Operating threshold"), float(result["threshold"]),
                                 unit=no_units, relationship_type=relation),
        ]
    items += [hd.sr.TextContentItem(local("REJECT", "Reason not analyzed"), dicom.clean_text(reason, 1024),
                                    relation) for reason in result.get("reasons") or []]
    content = hd.sr.ContainerContentItem(Code("18748-4", "LN", "Diagnostic imaging report"),
                                         template_id=None)
    content.ContentSequence = hd.sr.ContentSequence(items)
    source = str(header.SOPInstanceUID)
    sr = hd.sr.EnhancedSR(
        evidence=[study_reference(header)], content=content,
        series_instance_uid=result_uid(source, "sr-series", model_sha256), series_number=SR_SERIES_NUMBER,
        sop_instance_uid=result_uid(source, "sr", model_sha256), instance_number=1,
        manufacturer=MANUFACTURER, is_complete=True)
    sr.SeriesDescription = "Pneumonia triage report (not for diagnosis)"
    return sr


def decision_text(status: str, result: dict) -> str:
    from .clinician import decision_words

    if result.get("probability") is not None:
        return decision_words(float(result["probability"]), float(result["threshold"]))
    return f"Not analyzed ({status}): routine radiologist review required"
