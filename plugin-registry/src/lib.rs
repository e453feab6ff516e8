//! Everything between a plugin reference and verified bytes on disk. It knows nothing of Kafka, stores
//! or the worker: a reference goes in, verified module bytes come out.
