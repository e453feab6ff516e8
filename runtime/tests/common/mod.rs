//! Helpers shared by the runtime's integration tests.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

/// A module from `plugins/dist/`, built by `make plugins` (which `make test` runs first).
pub fn dist(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../plugins/dist/{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; build the example plugins with `make plugins`",
            path.display()
        )
    })
}
