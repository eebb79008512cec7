//! The crate's memory maps: the only `unsafe` outside `ggml/`.

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

/// Tells the kernel that `data`, a slice of `map`, will not be read again soon, so its pages leave
/// this process's resident set (and count no more in its RSS) instead of staying until the map is
/// dropped. Reading the range again later is still correct: the pages fault back in from the file.
/// A slice outside `map` is ignored; so are failures, since this is only advice.
pub fn release(map: &Mmap, data: &[u8]) {
    let base = map.as_ptr() as usize;
    let start = data.as_ptr() as usize;
    let Some(offset) = start.checked_sub(base) else { return };
    if data.is_empty() || offset.checked_add(data.len()).is_none_or(|end| end > map.len()) {
        return;
    }
    // SAFETY: MADV_DONTNEED is "unchecked" in memmap2 because on a private mapping it would discard
    // the process's own modifications. `map_readonly` makes read-only shared file mappings that are
    // never written, so the only effect is that the pages are dropped and, if read again, re-read
    // from the file with the same content. Borrowed slices of the range stay valid for the same
    // reason. The range lies inside the map (checked above); memmap2 aligns it to pages.
    #[allow(unsafe_code)]
    let _ = unsafe { map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, offset, data.len()) };
}

/// A read-only anonymous mapping of `len` bytes that starts with `prefix` and reads as zeros
/// after it. No swap is reserved for it, and the pages past the prefix are never touched, so a
/// mapping the size of a 70B model costs no memory: it stands in for a file that does not exist
/// yet, such as the model a plan describes.
pub fn map_zeroed_with_prefix(prefix: &[u8], len: usize) -> io::Result<Mmap> {
    if prefix.len() > len {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "the prefix is longer than the mapping"));
    }
    let mut map = memmap2::MmapOptions::new().len(len.max(1)).no_reserve_swap().map_anon()?;
    map[..prefix.len()].copy_from_slice(prefix);
    map.make_read_only()
}
