//! The crate's one memory map, and the only `unsafe` outside `ggml/`.

use std::fs::File;
use std::io;

pub use memmap2::Mmap;

/// Maps `file` read-only.
///
/// Inputs are mapped rather than read so that multi-gigabyte models cost no heap and their pages
/// can be dropped by the kernel once used.
pub fn map_readonly(file: &File) -> io::Result<Mmap> {
    // SAFETY: the map is only ever read through `&[u8]`, and we never write to a file we mapped:
    // every output goes to a new temporary file that is renamed into place. The remaining risk is
    // another process truncating the file while it is mapped, which makes reads past the new end
    // fault (SIGBUS); memmap2 and ripgrep accept the same risk, and no safe API can exclude it.
    #[allow(unsafe_code)]
    unsafe {
        Mmap::map(file)
    }
}
