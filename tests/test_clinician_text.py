"""What the clinician image and the Secondary Capture carry from a DICOM header: person names as
"Family, Given" in a font that draws them (never boxes, never raw ^ or =), and every value written
back valid for its VR (checked by pydicom's own validation)."""
from __future__ import annotations

import os
import warnings

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from model import clinician, names
from model.dicom_values import conform, problems, valid_uid

pytestmark = pytest.mark.verifies("SRS-027")

JAPANESE = "Yamada^Tarou=山田^太郎=やまだ^たろう"        # DICOM PS3.5 H.3.1 example name


@pytest.mark.parametrize("value, expected", [
    ("Doe^John", "Doe, John"),
    ("Doe^John^Quincy^Dr.^Jr", "Doe, Dr. John Quincy, Jr"),
    ("Doe", "Doe"),
    ("^John", "John"),
    ("", ""),
    ("Wang^XiaoDong=王^小東=", "王, 小東 (Wang, XiaoDong)"),
    (JAPANESE, "山田, 太郎 (Yamada, Tarou)"),
])
def test_person_name_family_given_with_every_font(value, expected):
    assert names.person_name(value, drawable=lambda text: True) == expected


def test_person_name_without_a_font_for_the_ideographs_falls_back_to_the_romanized_group():
    latin = lambda text: all(ord(c) < 0x250 for c in text)   # noqa: E731  (a system with Latin fonts only)
    assert names.person_name(JAPANESE, drawable=latin) == "Yamada, Tarou"
    assert names.person_name("=王^小東", drawable=latin) == names.NOT_SHOWN
    for v in (JAPANESE, "Hong^Gildong=洪^吉洞=홍^길동", "김^민준"):
        shown = names.person_name(v)
        assert "^" not in shown and "=" not in shown


def _cjk_font_installed() -> bool:
    return names.fonts_for("山田太郎") is not None


def test_cjk_names_are_drawn_with_a_font_that_has_their_glyphs(tmp_path):
    """The clinician PNG with a Japanese name: matplotlib reports no missing glyph (it warns
    'Glyph ... missing from font(s)' for every box it would draw)."""
    if not _cjk_font_installed():
        if os.environ.get("CI"):
            pytest.fail("CI must have a CJK font (apt-get install fonts-noto-cjk, see .ci/run)")
        pytest.skip("no CJK font installed (fonts-noto-cjk)")
    who = names.person_name(JAPANESE)
    assert who == "山田, 太郎 (Yamada, Tarou)"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        clinician.render_png(tmp_path / "c.png", np.zeros((64, 64), np.uint8), np.zeros((8, 8), np.float32),
                             probability=0.7, threshold=0.5, view="PA", saliency_method="grad-cam",
                             intended="For triage.", header_lines=[f"Patient {who} (ID 42)  Study: 胸部 X線"])
    missing = [str(w.message) for w in caught if "missing from font" in str(w.message)]
    assert missing == [] and (tmp_path / "c.png").stat().st_size > 10_000


def test_characters_no_font_draws_become_question_marks_not_boxes(tmp_path):
    line, family = clinician.drawable_line("Patient Doe \U0010fffd\U000f0000 x")
    assert line == "Patient Doe ?? x" and family
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        clinician.render_png(tmp_path / "c.png", np.zeros((64, 64), np.uint8), np.zeros((8, 8), np.float32),
                             probability=0.2, threshold=0.5, view="PA", saliency_method="grad-cam",
                             intended="For triage.", header_lines=["Patient Doe \U0010fffd"])
    assert not [w for w in caught if "missing from font" in str(w.message)]


def test_placeholder_fonts_are_never_used():
    assert not any("lastresort" in p.lower().replace("-", "") for p in names._fonts())


def _hostile_source() -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = "Doe^John"
    ds.PatientID = "P" * 70                                         # LO: at most 64
    ds.PatientSex = "unknown"                                       # CS: M, F or O
    ds.PatientBirthDate = "19991399"                                # not a date
    ds.StudyInstanceUID = "sha256:" + "ab" * 32                     # a hash in a UID field
    ds.StudyDate = "20240131"
    ds.StudyID = "S" * 64                                           # SH: at most 16
    ds.AccessionNumber = "ACC\\1\x07"                              # backslash and a control character
    ds.StudyDescription = "CHEST " + "x" * 100
    return ds


def test_values_written_back_are_valid_for_their_vr():
    src = _hostile_source()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert len(problems(src)) >= 3          # the source itself is invalid (the check can fail)
    uid = conform("StudyInstanceUID", src.StudyInstanceUID)
    assert valid_uid(uid) and uid == conform("StudyInstanceUID", src.StudyInstanceUID)   # derived, stable
    assert conform("StudyInstanceUID", "1.2.840.10008.1") == "1.2.840.10008.1"
    assert conform("StudyID", src.StudyID) == "S" * 16 and conform("PatientID", src.PatientID) == "P" * 64
    assert conform("PatientSex", "unknown") is None and conform("PatientSex", "f") == "F"
    assert conform("PatientBirthDate", "19991399") is None and conform("StudyDate", "20240131") == "20240131"
    assert conform("AccessionNumber", src.AccessionNumber) == "ACC 1"
    assert conform("StudyTime", "253000") is None and conform("StudyTime", "123000.5") == "123000.5"
    assert conform("PatientName", JAPANESE) == JAPANESE


def test_secondary_capture_from_a_hostile_source_passes_pydicom_validation(tmp_path):
    from PIL import Image

    png = tmp_path / "c.png"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(png)
    src = _hostile_source()
    path = clinician.secondary_capture(png, tmp_path / "sc.dcm", src)
    sc = pydicom.dcmread(path)
    assert problems(sc) == []
    assert sc.StudyInstanceUID == conform("StudyInstanceUID", src.StudyInstanceUID)
    assert sc.StudyID == "S" * 16 and "PatientSex" not in sc and "PatientBirthDate" not in sc
    assert sc.PatientName == "Doe^John"


def test_node_study_reference_conforms_the_copied_values():
    from model.results import study_reference

    src = _hostile_source()
    src.SOPClassUID, src.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.1", "not a uid"
    src.SeriesInstanceUID, src.Modality = "1.2.3", "CR"
    ref = study_reference(src)
    assert problems(ref) == []
    assert valid_uid(ref.SOPInstanceUID) and ref.SeriesInstanceUID == "1.2.3" and ref.PatientSex == ""
