"""Network adapters: the only package that imports pynetdicom."""
