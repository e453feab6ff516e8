//! The plugin runtime: runs client transformations compiled to WebAssembly inside a sandbox with fuel,
//! memory and wall-clock limits. It knows nothing of Kafka or stores: a record goes in, typed outputs or a
//! typed error come out.
