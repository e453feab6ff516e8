//! The host boundary. On `wasm32` these are the ABI v1 imports of module `millrace`; elsewhere they feed
//! the thread-local collector of [`crate::testing`], so plugin logic runs natively in unit tests.

#[cfg(target_arch = "wasm32")]
mod imp {
    #[link(wasm_import_module = "millrace")]
    unsafe extern "C" {
        #[link_name = "emit_point"]
        fn host_emit_point(ptr: *const u8, len: usize) -> i32;
        #[link_name = "emit_document"]
        fn host_emit_document(
            index_ptr: *const u8,
            index_len: usize,
            body_ptr: *const u8,
            body_len: usize,
            id_ptr: *const u8,
            id_len: usize,
        ) -> i32;
        #[link_name = "log"]
        fn host_log(level: i32, ptr: *const u8, len: usize);
        #[link_name = "reject"]
        fn host_reject(ptr: *const u8, len: usize);
    }

    // SAFETY (all four): the host only reads `len` bytes at `ptr`, which come from live Rust slices, and
    // bounds-checks them against the module's memory.
    pub fn emit_point(line: &str) -> i32 {
        unsafe { host_emit_point(line.as_ptr(), line.len()) }
    }

    pub fn emit_document(index: &str, body: &[u8], id: Option<&str>) -> i32 {
        let (id_ptr, id_len) = id.map_or((std::ptr::null(), 0), |id| (id.as_ptr(), id.len()));
        unsafe {
            host_emit_document(
                index.as_ptr(),
                index.len(),
                body.as_ptr(),
                body.len(),
                id_ptr,
                id_len,
            )
        }
    }

    pub fn log(level: i32, message: &str) {
        unsafe { host_log(level, message.as_ptr(), message.len()) }
    }

    pub fn reject(reason: &str) {
        unsafe { host_reject(reason.as_ptr(), reason.len()) }
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    use crate::testing::collect;

    pub fn emit_point(line: &str) -> i32 {
        collect(|o| o.points.push(line.to_string()));
        0
    }

    pub fn emit_document(index: &str, body: &[u8], id: Option<&str>) -> i32 {
        collect(|o| {
            o.documents.push(crate::testing::TestDocument {
                index: index.to_string(),
                body: String::from_utf8_lossy(body).into_owned(),
                id: id.map(str::to_string),
            })
        });
        0
    }

    pub fn log(level: i32, message: &str) {
        collect(|o| o.logs.push((level, message.to_string())));
    }

    pub fn reject(reason: &str) {
        collect(|o| {
            o.rejected.get_or_insert_with(|| reason.to_string());
        });
    }
}

pub(crate) use imp::*;
