"""PFS: the versioned file system (storage, metadata, commits, files, the FUSE view)."""

__version__ = "0.1.0"
