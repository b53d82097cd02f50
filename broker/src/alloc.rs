//! A global allocator that keeps a malformed request from aborting the process.
//!
//! The `kafka-protocol` decoders size a `Vec` from an array count read off the
//! wire before they decode a single element. A 10-byte frame can claim four
//! billion elements; the allocation then exceeds what the kernel's overcommit
//! heuristic allows, the allocator returns null and Rust aborts the process
//! (`handle_alloc_error` is not a panic). Every element takes at least one byte
//! on the wire and frames are capped at `socket.request.max.bytes`, so such a
//! decode always fails a moment later with a buffer underrun.
//!
//! [`GuardedAlloc`] serves requests larger than [`HUGE`] with an anonymous
//! `MAP_NORESERVE` mapping: the kernel hands out address space without
//! committing memory, the decoder touches at most a few pages before it fails,
//! and the mapping is released when the `Vec` drops. Everything else goes to
//! the system allocator unchanged. Binaries install it with
//! `#[global_allocator] static A: GuardedAlloc = GuardedAlloc;`.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};

/// Allocations above this size are served by `mmap(MAP_NORESERVE)`.
pub const HUGE: usize = 1 << 30;

/// See the module documentation.
pub struct GuardedAlloc;

fn page_size() -> usize {
    4096
}

// SAFETY: every method forwards to `System` except for huge layouts, which are
// served by mmap with page alignment (>= any alignment Rust asks of a huge
// layout up to a page) and released with munmap of the same length.
unsafe impl GlobalAlloc for GuardedAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > HUGE && layout.align() <= page_size() {
            // SAFETY: anonymous private mapping, no file descriptor involved.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    layout.size(),
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                    -1,
                    0,
                )
            };
            if p == libc::MAP_FAILED {
                return std::ptr::null_mut();
            }
            return p.cast();
        }
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if layout.size() > HUGE && layout.align() <= page_size() {
            // SAFETY: `ptr` came from the mmap above with this same length.
            unsafe {
                libc::munmap(ptr.cast(), layout.size());
            }
            return;
        }
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() > HUGE && layout.align() <= page_size() {
            // SAFETY: anonymous mappings are zero-filled by the kernel.
            return unsafe { self.alloc(layout) };
        }
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old_huge = layout.size() > HUGE && layout.align() <= page_size();
        let new_huge = new_size > HUGE && layout.align() <= page_size();
        if !old_huge && !new_huge {
            // SAFETY: both sides belong to `System`.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        // SAFETY: `new_size` is non-zero and the alignment is the caller's.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: allocate, copy the smaller of the two sizes, free the old block.
        unsafe {
            let new = self.alloc(new_layout);
            if !new.is_null() {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            new
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_allocation_is_address_space_only() {
        let a = GuardedAlloc;
        // 64 GiB: far beyond this machine's memory, yet it must not fail.
        let layout = Layout::from_size_align(64usize << 30, 8).unwrap();
        // SAFETY: test of the allocator itself; the block is freed below.
        unsafe {
            let p = a.alloc(layout);
            assert!(!p.is_null());
            *p = 7;
            assert_eq!(*p, 7);
            a.dealloc(p, layout);
        }
    }

    #[test]
    fn small_allocations_round_trip_through_realloc_into_huge() {
        let a = GuardedAlloc;
        let layout = Layout::from_size_align(16, 8).unwrap();
        // SAFETY: test of the allocator itself; blocks are freed below.
        unsafe {
            let p = a.alloc(layout);
            *p = 42;
            let q = a.realloc(p, layout, HUGE + 4096);
            assert_eq!(*q, 42);
            a.dealloc(q, Layout::from_size_align(HUGE + 4096, 8).unwrap());
        }
    }
}
