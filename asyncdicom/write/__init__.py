"""Writing received instances: paths, spool files, the writer pipeline."""
