//! The millrace worker library: configuration, the pipeline from Kafka through plugins to the stores,
//! the sinks and the observability endpoints. The `millrace` binary is a thin command line over it.
