//! The guest's memory allocator (on `wasm32`, with the default `allocator` feature): size classes with free
//! lists in front of the toolchain's `malloc`.
//!
//! Why: a plugin allocates and frees a handful of small blocks per record (a parsed string, a line of line
//! protocol, an index name), and wasi-libc's dlmalloc spent ~7% of `seed-router`'s time per record doing
//! it (issue 16 profile), several times what the host's allocator costs the same code compiled natively.
//! Here an allocation of up to 4 KiB pops a block off its class's list or carves one from a 64 KiB slab;
//! freeing pushes it back. Blocks are never returned to `malloc`: a plugin's instance is short-lived (the
//! host recycles it after a number of records or a memory high-water mark), so reuse within the class is
//! all that matters. Larger or over-aligned blocks go to `malloc` as before.
//!
//! A plugin that sets its own `#[global_allocator]` turns this off with `default-features = false`.
//! WebAssembly modules built for `wasm32-wasip1` are single-threaded, which is what makes the unsynchronised
//! state below sound; the allocator is not compiled for targets with threads (`target_feature = "atomics"`).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;

/// Classes of 16, 32, ..., 4096 bytes.
const CLASSES: usize = 9;
const MIN_BLOCK: usize = 16;
const MAX_BLOCK: usize = MIN_BLOCK << (CLASSES - 1);
const SLAB: usize = 64 * 1024;

struct State {
    /// Head of each class's free list (0: empty); a free block's first word is the next block.
    free: [usize; CLASSES],
    /// The unused rest of the current slab.
    bump: usize,
    end: usize,
}

/// The SDK's allocator; see the module documentation.
pub(crate) struct SizeClasses {
    state: UnsafeCell<State>,
}

impl std::fmt::Debug for SizeClasses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SizeClasses")
    }
}

// SAFETY: wasm32-wasip1 modules run on one thread (this module is only compiled without `atomics`), so the
// state is never touched concurrently.
unsafe impl Sync for SizeClasses {}

impl SizeClasses {
    pub(crate) const fn new() -> Self {
        Self {
            state: UnsafeCell::new(State {
                free: [0; CLASSES],
                bump: 0,
                end: 0,
            }),
        }
    }
}

/// The class of a layout, if it is small and at most 16-byte aligned (the slabs' alignment).
#[inline]
fn class_of(layout: Layout) -> Option<usize> {
    if layout.size() > MAX_BLOCK || layout.align() > MIN_BLOCK {
        return None;
    }
    let size = layout.size().max(MIN_BLOCK).next_power_of_two();
    Some((size.trailing_zeros() - MIN_BLOCK.trailing_zeros()) as usize)
}

// SAFETY: every block handed out is `MIN_BLOCK << class` bytes (at least the layout's size), 16-byte
// aligned (slabs are 16-aligned and block sizes are multiples of 16), and owned by exactly one of: the
// caller, a free list, or the unused slab tail.
unsafe impl GlobalAlloc for SizeClasses {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some(class) = class_of(layout) else {
            return unsafe { System.alloc(layout) };
        };
        let state = unsafe { &mut *self.state.get() };
        let head = state.free[class];
        if head != 0 {
            state.free[class] = unsafe { *(head as *const usize) };
            return head as *mut u8;
        }
        let size = MIN_BLOCK << class;
        if state.end - state.bump < size {
            // SAFETY: SLAB and MIN_BLOCK form a valid layout.
            let slab = unsafe { System.alloc(Layout::from_size_align_unchecked(SLAB, MIN_BLOCK)) };
            if slab.is_null() {
                return slab;
            }
            state.bump = slab as usize;
            state.end = state.bump + SLAB;
        }
        let block = state.bump;
        state.bump += size;
        block as *mut u8
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let Some(class) = class_of(layout) else {
            return unsafe { System.dealloc(ptr, layout) };
        };
        let state = unsafe { &mut *self.state.get() };
        unsafe { *(ptr as *mut usize) = state.free[class] };
        state.free[class] = ptr as usize;
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees `new_size` with `layout.align()` is a valid layout.
        let new = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        match (class_of(layout), class_of(new)) {
            (Some(a), Some(b)) if a == b => ptr,
            (None, None) => unsafe { System.realloc(ptr, layout, new_size) },
            _ => {
                let fresh = unsafe { self.alloc(new) };
                if !fresh.is_null() {
                    unsafe {
                        std::ptr::copy_nonoverlapping(ptr, fresh, layout.size().min(new_size));
                        self.dealloc(ptr, layout);
                    }
                }
                fresh
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_cover_sizes_and_alignments() {
        let l = |s, a| Layout::from_size_align(s, a).unwrap();
        assert_eq!(class_of(l(0, 1)), Some(0));
        assert_eq!(class_of(l(16, 8)), Some(0));
        assert_eq!(class_of(l(17, 1)), Some(1));
        assert_eq!(class_of(l(4096, 16)), Some(8));
        assert_eq!(class_of(l(4097, 1)), None);
        assert_eq!(class_of(l(8, 32)), None);
    }

    #[test]
    fn blocks_are_reused_aligned_and_keep_their_contents_through_realloc() {
        let a = SizeClasses::new();
        unsafe {
            let l24 = Layout::from_size_align(24, 8).unwrap();
            let p = a.alloc(l24);
            assert_eq!(p as usize % 16, 0);
            let q = a.alloc(l24);
            assert_ne!(p, q);
            a.dealloc(p, l24);
            assert_eq!(a.alloc(l24), p, "a freed block is handed out again");
            for i in 0..24 {
                *q.add(i) = i as u8;
            }
            let r = a.realloc(q, l24, 30);
            assert_eq!(r, q, "growing within the class keeps the block");
            let s = a.realloc(r, l24, 100);
            assert_ne!(s, r);
            assert!((0..24).all(|i| *s.add(i) == i as u8));
            let big = Layout::from_size_align(10_000, 8).unwrap();
            let b = a.alloc(big);
            assert!(!b.is_null());
            a.dealloc(b, big);
        }
    }
}
