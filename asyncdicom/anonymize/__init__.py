"""A native interpreter for RSNA CTP DicomAnonymizer scripts and lookup tables.

It follows the behavioural specification of CTP's DicomAnonymizer as run by the
DicomAnonymizerTool (DAT) 2021 release: the same rules, functions, quirks and output, checked
against DAT's recorded outputs. ``faithful`` mode reproduces DAT; ``safe`` mode quarantines
where DAT would let identifying data through.
"""
