"""DICOMweb sources: QIDO-RS for C-FIND batches (WADO-RS retrieval to come), behind the same
session protocol as the DIMSE backend (:mod:`asyncdicom.net.base`)."""
