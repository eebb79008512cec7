//! The crate's memory maps: the only `unsafe` outside `ggml/`.
//!
//! Inputs are mapped rather than read so that multi-gigabyte models cost no heap and their pages
//! can be dropped by the kernel once used. A mapped file can still shrink underneath us: when
//! another program truncates it, every read of a page past the new end faults with SIGBUS, and no
//! check made when the file was opened and validated can rule that out (memmap2 and ripgrep
//! accept the same risk; a file lease would only delay the truncation, and only for files we own).
//!
//! So the fault is turned into an error: every map of a file registers its address range with a
//! message naming the file, formatted in advance, and the first map installs a SIGBUS handler
//! (Linux). A fault inside a registered map removes the temporary files of unfinished outputs
//! (registered by [`crate::io::AtomicFile`] through [`remove_on_fault`]), writes that one line to
//! stderr and exits with code [`EXIT_INPUT_CHANGED`]. Nothing else is possible inside a signal
//! handler: it may not allocate, take a lock or unwind, so it reads fixed tables of atomics and
//! calls only `unlink`, `write`, `pause` and `_exit`, which POSIX lists as async-signal-safe.
//! When several threads fault at once (convert decodes on every core), the first reports and the
//! others wait for its `_exit`, so the line is printed once. A fault
//! anywhere else (a map that llama.cpp made itself, for instance) goes to the handler that was
//! installed before ours.

use std::fs::File;
use std::io;
use std::ops::Deref;
use std::path::Path;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

/// The exit code after an input shrank while mapped: 3, a bad input file, as for a file that was
/// already truncated when it was opened.
pub const EXIT_INPUT_CHANGED: i32 = 3;

/// A read-only memory map: of a file ([`map_readonly`]), or of a prefix followed by zeros
/// ([`map_zeroed_with_prefix`]). Derefs to its bytes.
#[derive(Debug)]
pub struct ReadOnlyMap {
    map: memmap2::Mmap,
    /// The map's entry in the table the SIGBUS handler reads, for maps of files.
    _registration: Option<Registration>,
}

impl Deref for ReadOnlyMap {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.map
    }
}

/// Maps `file`, opened from `path`, read-only, and registers it so that a truncation by another
/// program while it is mapped ends the process with a message naming `path` (see the module
/// docs) instead of a bare bus error.
pub fn map_readonly(file: &File, path: &Path) -> io::Result<ReadOnlyMap> {
    // SAFETY: the map is only ever read through `&[u8]`, and we never write to a file we mapped:
    // every output goes to a new temporary file that is renamed into place. The remaining risk is
    // another process truncating the file while it is mapped, which makes reads past the new end
    // fault (SIGBUS); no safe API can exclude it, and the registration below turns it into a clean
    // exit with a message.
    #[allow(unsafe_code)]
    let map = unsafe { memmap2::Mmap::map(file)? };
    let registration = if map.is_empty() {
        None
    } else {
        install_handler();
        let message = shrank_message(path);
        claim(&MAPS, map.as_ptr() as usize, map.len(), message.as_bytes())
    };
    Ok(ReadOnlyMap { map, _registration: registration })
}

/// The line the SIGBUS handler prints for a fault in the map of `path`, at most [`TEXT_CAP`]
/// bytes (a longer path keeps its end).
fn shrank_message(path: &Path) -> String {
    let (head, tail) = ("gguftune: ", ": the file shrank while it was being read (truncated by another program?); stopped, unfinished outputs removed\n");
    let path = path.display().to_string();
    let room = TEXT_CAP - head.len() - tail.len();
    if path.len() <= room {
        return format!("{head}{path}{tail}");
    }
    let mut start = path.len() - room + "...".len();
    while !path.is_char_boundary(start) {
        start += 1;
    }
    format!("{head}...{}{tail}", &path[start..])
}

impl ReadOnlyMap {
    /// Tells the kernel that `data`, a slice of this map, will not be read again soon, so its
    /// pages leave this process's resident set (and count no more in its RSS) instead of staying
    /// until the map is dropped. Reading the range again later is still correct: the pages fault
    /// back in from the file. A slice outside the map is ignored; so are failures, since this is
    /// only advice. Only for maps of files: a zeroed map's pages would come back as zeros.
    pub fn release(&self, data: &[u8]) {
        let base = self.map.as_ptr() as usize;
        let start = data.as_ptr() as usize;
        let Some(offset) = start.checked_sub(base) else { return };
        if data.is_empty() || offset.checked_add(data.len()).is_none_or(|end| end > self.map.len()) {
            return;
        }
        // SAFETY: MADV_DONTNEED is "unchecked" in memmap2 because on a private mapping it would
        // discard the process's own modifications. `map_readonly` makes read-only shared file
        // mappings that are never written, so the only effect is that the pages are dropped and,
        // if read again, re-read from the file with the same content. Borrowed slices of the range
        // stay valid for the same reason. The range lies inside the map (checked above); memmap2
        // aligns it to pages.
        #[allow(unsafe_code)]
        let _ = unsafe { self.map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, offset, data.len()) };
    }
}

/// A read-only anonymous mapping of `len` bytes that starts with `prefix` and reads as zeros
/// after it. No swap is reserved for it, and the pages past the prefix are never touched, so a
/// mapping the size of a 70B model costs no memory: it stands in for a file that does not exist
/// yet, such as the model a plan describes.
pub fn map_zeroed_with_prefix(prefix: &[u8], len: usize) -> io::Result<ReadOnlyMap> {
    if prefix.len() > len {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "the prefix is longer than the mapping"));
    }
    let mut map = memmap2::MmapOptions::new().len(len.max(1)).no_reserve_swap().map_anon()?;
    map[..prefix.len()].copy_from_slice(prefix);
    Ok(ReadOnlyMap { map: map.make_read_only()?, _registration: None })
}

/// While alive, `path` (a temporary file of an unfinished output) is removed if the process is
/// ended by a fault in a mapped input (see the module docs). A path of 1 KiB or more, or more than
/// [`TEMP_SLOTS`] at once, is not registered: such a file stays behind, and the next write of the
/// same output removes it.
#[derive(Debug)]
pub struct RemoveOnFault {
    _registration: Option<Registration>,
}

/// Registers `path` for removal (see [`RemoveOnFault`]).
pub fn remove_on_fault(path: &Path) -> RemoveOnFault {
    #[cfg(unix)]
    let registration = {
        use std::os::unix::ffi::OsStrExt;
        let bytes = path.as_os_str().as_bytes();
        let mut text = Vec::with_capacity(bytes.len() + 1);
        text.extend_from_slice(bytes);
        text.push(0);
        (!bytes.contains(&0)).then(|| claim(&TEMPS, 0, 0, &text)).flatten()
    };
    #[cfg(not(unix))]
    let registration = {
        let _ = path;
        None
    };
    RemoveOnFault { _registration: registration }
}

// ----- The tables the signal handler reads ----------------------------------------------------

/// Bytes of a slot's text: a map's message, or a temporary file's NUL-terminated path.
const TEXT_CAP: usize = 1024;
/// Files mapped at once that a fault can be traced to (a sharded checkpoint maps every shard).
const MAP_SLOTS: usize = 128;
/// Temporary output files at once that a fault removes.
pub const TEMP_SLOTS: usize = 64;

const FREE: u8 = 0;
const FILLING: u8 = 1;
const LIVE: u8 = 2;

/// One entry of a table. Atomics throughout, so that the handler may read a slot that another
/// thread is filling or emptying without a data race; `state` says whether the rest is whole.
struct Slot {
    state: AtomicU8,
    start: AtomicUsize,
    len: AtomicUsize,
    text_len: AtomicUsize,
    text: [AtomicU8; TEXT_CAP],
}

impl Slot {
    const fn new() -> Slot {
        Slot {
            state: AtomicU8::new(FREE),
            start: AtomicUsize::new(0),
            len: AtomicUsize::new(0),
            text_len: AtomicUsize::new(0),
            text: [const { AtomicU8::new(0) }; TEXT_CAP],
        }
    }

    /// Copies the text into `buf` and returns its length, if the slot is live before and after.
    fn read_text(&self, buf: &mut [u8; TEXT_CAP]) -> Option<usize> {
        let n = self.text_len.load(Ordering::Relaxed).min(TEXT_CAP);
        for (dst, src) in buf.iter_mut().zip(&self.text).take(n) {
            *dst = src.load(Ordering::Relaxed);
        }
        (self.state.load(Ordering::Acquire) == LIVE).then_some(n)
    }
}

static MAPS: [Slot; MAP_SLOTS] = [const { Slot::new() }; MAP_SLOTS];
static TEMPS: [Slot; TEMP_SLOTS] = [const { Slot::new() }; TEMP_SLOTS];

/// A claimed slot, freed on drop.
struct Registration {
    table: &'static [Slot],
    index: usize,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration").field("index", &self.index).finish_non_exhaustive()
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.table[self.index].state.store(FREE, Ordering::Release);
    }
}

/// Fills a free slot of `table`; `None` when the text is too long or the table is full.
fn claim(table: &'static [Slot], start: usize, len: usize, text: &[u8]) -> Option<Registration> {
    if text.len() > TEXT_CAP {
        return None;
    }
    let index = table
        .iter()
        .position(|s| s.state.compare_exchange(FREE, FILLING, Ordering::Acquire, Ordering::Relaxed).is_ok())?;
    let slot = &table[index];
    slot.start.store(start, Ordering::Relaxed);
    slot.len.store(len, Ordering::Relaxed);
    for (dst, &src) in slot.text.iter().zip(text) {
        dst.store(src, Ordering::Relaxed);
    }
    slot.text_len.store(text.len(), Ordering::Relaxed);
    slot.state.store(LIVE, Ordering::Release);
    Some(Registration { table, index })
}

/// The message of the live map that contains `addr`, copied into `buf`; its length.
fn find_map(addr: usize, buf: &mut [u8; TEXT_CAP]) -> Option<usize> {
    MAPS.iter().find_map(|slot| {
        if slot.state.load(Ordering::Acquire) != LIVE {
            return None;
        }
        let (start, len) = (slot.start.load(Ordering::Relaxed), slot.len.load(Ordering::Relaxed));
        let inside = addr.checked_sub(start).is_some_and(|offset| offset < len);
        if inside {
            slot.read_text(buf)
        } else {
            None
        }
    })
}

// ----- The SIGBUS handler (Linux) --------------------------------------------------------------

#[cfg(any(target_os = "linux", target_os = "android"))]
mod handler {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Once, OnceLock};

    use super::{find_map, EXIT_INPUT_CHANGED, TEMPS, TEXT_CAP};

    /// Set by the first thread that reports a fault in one of our maps.
    static REPORTING: AtomicBool = AtomicBool::new(false);

    /// The action for SIGBUS before ours (Rust's runtime installs one to report stack overflows).
    static PREVIOUS: OnceLock<libc::sigaction> = OnceLock::new();

    /// Installs [`on_sigbus`] for SIGBUS, once per process.
    pub fn install() {
        static INSTALL: Once = Once::new();
        INSTALL.call_once(|| {
            // SAFETY: sigaction with a null new action only reads the current one into `previous`,
            // a zeroed (valid: integers, a signal set and an optional function pointer) struct.
            #[allow(unsafe_code)]
            let previous = unsafe {
                let mut previous: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(libc::SIGBUS, std::ptr::null(), &mut previous) != 0 {
                    return;
                }
                previous
            };
            // Set before ours is installed, so the handler always finds it.
            let _ = PREVIOUS.set(previous);
            // SAFETY: `action` is fully initialised: zeroed, then the handler, an empty mask and
            // the flags. The handler is an `extern "C"` function with the three-argument
            // signature SA_SIGINFO requires, and it only calls async-signal-safe functions.
            #[allow(unsafe_code)]
            unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = on_sigbus as extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void)
                    as libc::sighandler_t;
                action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
                libc::sigemptyset(&mut action.sa_mask);
                libc::sigaction(libc::SIGBUS, &action, std::ptr::null_mut());
            }
        });
    }

    /// Runs on the faulting thread. A fault inside one of our maps: remove the registered
    /// temporary files, print the map's message, exit. Any other: put the previous action back and
    /// return, so that the access faults again and the previous action handles it.
    extern "C" fn on_sigbus(_signal: libc::c_int, info: *mut libc::siginfo_t, _context: *mut libc::c_void) {
        // SAFETY: the kernel passes a valid siginfo_t to an SA_SIGINFO handler; for SIGBUS its
        // address field is the faulting address.
        #[allow(unsafe_code)]
        let addr = unsafe { (*info).si_addr() } as usize;
        let mut buf = [0u8; TEXT_CAP];
        if let Some(n) = find_map(addr, &mut buf) {
            // Threads reading the same truncated file fault together: the first one reports and
            // ends the process, the others wait for that (returning would fault again).
            if REPORTING.swap(true, Ordering::AcqRel) {
                loop {
                    // SAFETY: pause is async-signal-safe and only waits; the reporting thread's
                    // _exit ends every thread of the process.
                    #[allow(unsafe_code)]
                    unsafe {
                        libc::pause();
                    }
                }
            }
            remove_temps();
            write_stderr(buf.get(..n).unwrap_or(&[]));
            // SAFETY: _exit is async-signal-safe; it ends the process without running atexit
            // handlers or destructors, which could allocate or take locks held by this thread.
            #[allow(unsafe_code)]
            unsafe {
                libc::_exit(EXIT_INPUT_CHANGED)
            };
        }
        // SAFETY: sigaction is async-signal-safe; the action is a copy of the one read at
        // installation (or the default action if that failed), both valid.
        #[allow(unsafe_code)]
        unsafe {
            let mut default: libc::sigaction = std::mem::zeroed();
            default.sa_sigaction = libc::SIG_DFL;
            let previous = PREVIOUS.get().unwrap_or(&default);
            libc::sigaction(libc::SIGBUS, previous, std::ptr::null_mut());
        }
    }

    /// Unlinks every registered temporary file.
    pub(super) fn remove_temps() {
        let mut path = [0u8; TEXT_CAP];
        for slot in &TEMPS {
            if slot.state.load(Ordering::Acquire) != super::LIVE {
                continue;
            }
            // The text ends with a NUL (see `remove_on_fault`); a torn read is refused by
            // `read_text`, and the last byte of the buffer stays 0 in any case.
            if let Some(n) = slot.read_text(&mut path) {
                if n > 0 && n < TEXT_CAP && path[n - 1] == 0 {
                    // SAFETY: `path` holds a NUL-terminated string (checked above); unlink is
                    // async-signal-safe and its failure (the file already renamed) is harmless.
                    #[allow(unsafe_code)]
                    unsafe {
                        libc::unlink(path.as_ptr().cast());
                    }
                }
            }
        }
    }

    /// Writes `bytes` to stderr, retrying short and interrupted writes.
    fn write_stderr(mut bytes: &[u8]) {
        while !bytes.is_empty() {
            // SAFETY: the pointer and length come from the same live slice; write is
            // async-signal-safe.
            #[allow(unsafe_code)]
            let written = unsafe { libc::write(libc::STDERR_FILENO, bytes.as_ptr().cast(), bytes.len()) };
            match usize::try_from(written) {
                Ok(n) if n > 0 => bytes = bytes.get(n..).unwrap_or(&[]),
                _ if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) => {}
                _ => return,
            }
        }
    }
}

/// Removes the temporary files registered with [`remove_on_fault`] now, for code that ends the
/// process itself in the middle of a run (ggml's abort callback, `ggml::abort`). Takes no lock
/// and allocates nothing (`unlink` only, as the SIGBUS handler), so it is safe wherever that
/// handler is.
pub fn remove_temporary_outputs() {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    handler::remove_temps();
}

/// Installs the SIGBUS handler where there is one (Linux).
fn install_handler() {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    handler::install();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_names_the_file_on_one_line_and_fits_its_slot() {
        let m = shrank_message(Path::new("models/a.gguf"));
        assert!(m.starts_with("gguftune: models/a.gguf: the file shrank while it was being read"), "{m}");
        assert_eq!(m.matches('\n').count(), 1);
        assert!(m.ends_with('\n'));
        let long = "é".repeat(2000);
        let m = shrank_message(Path::new(&long));
        assert!(m.len() <= TEXT_CAP && m.contains("...é") && m.ends_with("outputs removed\n"), "{}", m.len());
    }

    #[test]
    fn a_fault_address_finds_the_map_it_falls_in() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.bin");
        std::fs::write(&path, vec![7u8; 10_000]).unwrap();
        let map = map_readonly(&File::open(&path).unwrap(), &path).unwrap();
        let mut buf = [0u8; TEXT_CAP];
        let base = map.as_ptr() as usize;
        let n = find_map(base + 9_999, &mut buf).expect("inside the map");
        assert!(std::str::from_utf8(&buf[..n]).unwrap().contains("x.bin: the file shrank"));
        assert_eq!(find_map(base + 10_000, &mut buf), None);
        drop(map);
        assert_eq!(find_map(base, &mut buf), None, "a dropped map is no longer registered");
    }

    #[test]
    fn registrations_are_freed_and_a_full_table_registers_nothing() {
        let held: Vec<RemoveOnFault> =
            (0..TEMP_SLOTS + 3).map(|i| remove_on_fault(Path::new(&format!("t{i}")))).collect();
        assert!(held.iter().filter(|r| r._registration.is_none()).count() >= 3);
        drop(held);
        assert!(remove_on_fault(Path::new("again"))._registration.is_some());
    }
}
