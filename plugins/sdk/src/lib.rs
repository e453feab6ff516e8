//! The millrace guest SDK (ABI v1). Work in progress.
