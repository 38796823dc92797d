"""Which storage presentation contexts to propose for C-GET (at most 128 per association).

Every common storage SOP class gets one context offering the uncompressed transfer syntaxes.
The ten most common image classes also get one context per compressed transfer syntax, so a
PACS can send each instance in the transfer syntax it is stored in rather than transcoding
it (an acceptor picks only one transfer syntax per context). Classes from
``request.sop_classes`` are added with uncompressed contexts.
"""

from __future__ import annotations

from collections.abc import Sequence

MAX_CONTEXTS = 128
QUERY_CONTEXTS = 2  # Verification and the C-GET information model
CLASS_ROOM = MAX_CONTEXTS - QUERY_CONTEXTS  # SOP classes one C-GET association can take

UNCOMPRESSED = (
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.2",  # Explicit VR Big Endian (retired)
)
COMPRESSED = (
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless, First-Order Prediction
    "1.2.840.10008.1.2.4.50",  # JPEG Baseline
    "1.2.840.10008.1.2.4.51",  # JPEG Extended
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.5",  # RLE Lossless
)
AS_STORED = (  # one context each for a learned class, so the PACS can send what it stores unchanged
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian: an acceptor may pick another in the first context
    "1.2.840.10008.1.2",  # Implicit VR Little Endian: kept implicit, not converted to explicit VR
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.2",  # Explicit VR Big Endian: a PACS that cannot byte-swap sends it as it is
    *COMPRESSED,
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless, Non-Hierarchical (Process 14)
    "1.2.840.10008.1.2.4.81",  # JPEG-LS Lossy (Near-Lossless)
)
CONTEXTS_PER_CLASS = 1 + len(AS_STORED)  # a learned class: uncompressed, then each syntax as stored
COMMON_IMAGES = (
    "1.2.840.10008.5.1.4.1.1.2",  # CT Image
    "1.2.840.10008.5.1.4.1.1.4",  # MR Image
    "1.2.840.10008.5.1.4.1.1.1",  # Computed Radiography Image
    "1.2.840.10008.5.1.4.1.1.1.1",  # Digital X-Ray Image - For Presentation
    "1.2.840.10008.5.1.4.1.1.1.2",  # Digital Mammography X-Ray Image - For Presentation
    "1.2.840.10008.5.1.4.1.1.6.1",  # Ultrasound Image
    "1.2.840.10008.5.1.4.1.1.3.1",  # Ultrasound Multi-frame Image
    "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture Image
    "1.2.840.10008.5.1.4.1.1.20",  # Nuclear Medicine Image
    "1.2.840.10008.5.1.4.1.1.128",  # Positron Emission Tomography Image
)
OTHER_CLASSES = (
    "1.2.840.10008.5.1.4.1.1.1.1.1",  # Digital X-Ray Image - For Processing
    "1.2.840.10008.5.1.4.1.1.1.2.1",  # Digital Mammography X-Ray Image - For Processing
    "1.2.840.10008.5.1.4.1.1.13.1.3",  # Breast Tomosynthesis Image
    "1.2.840.10008.5.1.4.1.1.13.1.4",  # Breast Projection X-Ray Image - For Presentation
    "1.2.840.10008.5.1.4.1.1.2.1",  # Enhanced CT Image
    "1.2.840.10008.5.1.4.1.1.2.2",  # Legacy Converted Enhanced CT Image
    "1.2.840.10008.5.1.4.1.1.4.1",  # Enhanced MR Image
    "1.2.840.10008.5.1.4.1.1.4.2",  # MR Spectroscopy
    "1.2.840.10008.5.1.4.1.1.4.3",  # Enhanced MR Color Image
    "1.2.840.10008.5.1.4.1.1.4.4",  # Legacy Converted Enhanced MR Image
    "1.2.840.10008.5.1.4.1.1.6.2",  # Enhanced US Volume
    "1.2.840.10008.5.1.4.1.1.7.2",  # Multi-frame Grayscale Byte Secondary Capture Image
    "1.2.840.10008.5.1.4.1.1.7.3",  # Multi-frame Grayscale Word Secondary Capture Image
    "1.2.840.10008.5.1.4.1.1.7.4",  # Multi-frame True Color Secondary Capture Image
    "1.2.840.10008.5.1.4.1.1.130",  # Enhanced PET Image
    "1.2.840.10008.5.1.4.1.1.12.1",  # X-Ray Angiographic Image
    "1.2.840.10008.5.1.4.1.1.12.1.1",  # Enhanced XA Image
    "1.2.840.10008.5.1.4.1.1.12.2",  # X-Ray Radiofluoroscopic Image
    "1.2.840.10008.5.1.4.1.1.13.1.1",  # X-Ray 3D Angiographic Image
    "1.2.840.10008.5.1.4.1.1.481.1",  # RT Image
    "1.2.840.10008.5.1.4.1.1.481.2",  # RT Dose
    "1.2.840.10008.5.1.4.1.1.481.3",  # RT Structure Set
    "1.2.840.10008.5.1.4.1.1.481.5",  # RT Plan
    "1.2.840.10008.5.1.4.1.1.88.11",  # Basic Text SR
    "1.2.840.10008.5.1.4.1.1.88.22",  # Enhanced SR
    "1.2.840.10008.5.1.4.1.1.88.33",  # Comprehensive SR
    "1.2.840.10008.5.1.4.1.1.88.59",  # Key Object Selection Document
    "1.2.840.10008.5.1.4.1.1.88.67",  # X-Ray Radiation Dose SR
    "1.2.840.10008.5.1.4.1.1.11.1",  # Grayscale Softcopy Presentation State
    "1.2.840.10008.5.1.4.1.1.66",  # Raw Data
    "1.2.840.10008.5.1.4.1.1.66.1",  # Spatial Registration
    "1.2.840.10008.5.1.4.1.1.66.4",  # Segmentation
    "1.2.840.10008.5.1.4.1.1.30",  # Parametric Map
    "1.2.840.10008.5.1.4.1.1.104.1",  # Encapsulated PDF
    "1.2.840.10008.5.1.4.1.1.77.1.1",  # VL Endoscopic Image
    "1.2.840.10008.5.1.4.1.1.77.1.2",  # VL Microscopic Image
    "1.2.840.10008.5.1.4.1.1.77.1.4",  # VL Photographic Image
    "1.2.840.10008.5.1.4.1.1.77.1.5.1",  # Ophthalmic Photography 8 Bit Image
    "1.2.840.10008.5.1.4.1.1.77.1.6",  # VL Whole Slide Microscopy Image
    "1.2.840.10008.5.1.4.1.1.200.2",  # CT Performed Procedure Protocol
)


def learned_contexts(classes: Sequence[str], extra: Sequence[str] = ()) -> list[tuple[str, tuple[str, ...]]]:
    """The proposal for a C-GET whose SOP classes are known: each of ``classes`` with the
    uncompressed syntaxes and one context per syntax of :data:`AS_STORED` (so the PACS can send
    what it stores), then the usual proposal as room allows (:func:`storage_contexts`)."""
    room = MAX_CONTEXTS - QUERY_CONTEXTS
    wanted = list(dict.fromkeys(classes))
    plain: tuple[str, ...] = UNCOMPRESSED
    contexts: list[tuple[str, tuple[str, ...]]] = [(uid, plain) for uid in wanted][:room]
    for uid in wanted:
        for syntax in AS_STORED:
            if len(contexts) < room:
                contexts.append((uid, (syntax,)))
    for uid, syntaxes in storage_contexts(extra):
        if len(contexts) >= room:
            break
        if uid not in wanted:
            contexts.append((uid, syntaxes))
    return contexts


def storage_contexts(extra: Sequence[str] = ()) -> list[tuple[str, tuple[str, ...]]]:
    """(SOP class, transfer syntaxes) for every storage context to propose, within the limit."""
    contexts: list[tuple[str, tuple[str, ...]]] = []
    classes = [*COMMON_IMAGES, *OTHER_CLASSES, *(uid for uid in extra if uid not in COMMON_IMAGES + OTHER_CLASSES)]
    for uid in dict.fromkeys(classes):
        contexts.append((uid, UNCOMPRESSED))
    for uid in COMMON_IMAGES:
        contexts.extend((uid, (syntax,)) for syntax in COMPRESSED)
    if len(contexts) + QUERY_CONTEXTS > MAX_CONTEXTS:
        # keep every SOP class; drop compressed contexts of the least common images first
        overflow = len(contexts) + QUERY_CONTEXTS - MAX_CONTEXTS
        contexts = contexts[: len(contexts) - overflow]
    return contexts
