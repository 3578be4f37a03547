"""A minimal JPEG lossless (process 14, ITU-T T.81 Annex H) encoder for tests.

No encoder for this transfer syntax is installed (pylibjpeg-libjpeg only decodes it), so the tests
write the bitstream themselves: SOF3, one Huffman table, one scan with predictor 1..7, point
transform 0. Decoding it back through `model.dicom` checks the real decoder path against known
pixels.
"""
from __future__ import annotations

import struct

import numpy as np

# One DC table: the 17 difference categories 0..16, each a 5-bit code equal to its category.
_CODE_LENGTH = 5
_CATEGORIES = 17


def _segment(marker: int, payload: bytes) -> bytes:
    return struct.pack(">HH", marker, len(payload) + 2) + payload


def _prediction(img: np.ndarray, row: int, col: int, predictor: int, precision: int) -> int:
    if row == 0 and col == 0:
        return 1 << (precision - 1)
    if row == 0:
        return int(img[row, col - 1])
    if col == 0:
        return int(img[row - 1, col])
    ra, rb, rc = int(img[row, col - 1]), int(img[row - 1, col]), int(img[row - 1, col - 1])
    return {1: ra, 2: rb, 3: rc, 4: ra + rb - rc, 5: ra + ((rb - rc) >> 1),
            6: rb + ((ra - rc) >> 1), 7: (ra + rb) >> 1}[predictor]


class _Bits:
    def __init__(self):
        self.out = bytearray()
        self.acc = 0
        self.n = 0

    def put(self, value: int, length: int) -> None:
        for shift in range(length - 1, -1, -1):
            self.acc = (self.acc << 1) | ((value >> shift) & 1)
            self.n += 1
            if self.n == 8:
                self._byte()

    def _byte(self) -> None:
        self.out.append(self.acc)
        if self.acc == 0xFF:
            self.out.append(0x00)  # byte stuffing
        self.acc = self.n = 0

    def close(self) -> bytes:
        if self.n:
            self.put((1 << (8 - self.n)) - 1, 8 - self.n)  # pad with 1-bits
        return bytes(self.out)


def encode(img: np.ndarray, precision: int, predictor: int = 1) -> bytes:
    """A JPEG lossless bitstream of a 2-D unsigned image whose values fit in `precision` bits."""
    img = np.asarray(img)
    if img.ndim != 2 or img.min() < 0 or img.max() >= (1 << precision) or predictor not in range(1, 8):
        raise ValueError("encode: 2-D unsigned image within precision, predictor 1..7")
    rows, cols = img.shape
    bits = _Bits()
    for r in range(rows):
        for c in range(cols):
            diff = (int(img[r, c]) - _prediction(img, r, c, predictor, precision)) % 65536
            if diff > 32768:
                diff -= 65536
            category = abs(diff).bit_length()
            bits.put(category, _CODE_LENGTH)
            if 0 < category < 16:
                bits.put(diff if diff > 0 else diff + (1 << category) - 1, category)
    huffman = bytes([0x00]) + bytes(_CODE_LENGTH - 1) + bytes([_CATEGORIES]) + bytes(16 - _CODE_LENGTH)
    huffman += bytes(range(_CATEGORIES))
    return (b"\xff\xd8"
            + _segment(0xFFC3, struct.pack(">BHHB", precision, rows, cols, 1) + bytes([1, 0x11, 0]))
            + _segment(0xFFC4, huffman)
            + _segment(0xFFDA, bytes([1, 1, 0x00, predictor, 0, 0]))
            + bits.close() + b"\xff\xd9")
