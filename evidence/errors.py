"""Errors of the evidence layer. Each message names the record, the field and what to do."""


class EvidenceError(Exception):
    """A record is missing, malformed, or does not match its hash."""


class MissingRecord(EvidenceError):
    pass


class MissingValue(EvidenceError):
    pass
