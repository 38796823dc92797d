"""DICOMweb sources: QIDO-RS for C-FIND batches and WADO-RS for C-GET ones, behind the same
session protocol as the DIMSE backend (:mod:`asyncdicom.net.base`)."""
