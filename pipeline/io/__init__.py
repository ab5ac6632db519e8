"""Artifact I/O: atomic writes and the HDF5 artifact store."""
