//! llama.cpp's and ggml's log, routed into a per-thread buffer of recent errors (so a failed load
//! can say why) and to stderr when `GGUFTUNE_LOG` is set.

use std::cell::RefCell;
use std::ffi::{c_char, c_void, CStr};

use llama_cpp_sys_2 as sys;

/// How many recent error lines are kept per thread.
const KEPT_LINES: usize = 8;

thread_local! {
    static RECENT_ERRORS: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

pub(super) fn install() {
    // SAFETY: `on_log` is an `extern "C"` function that lives for the whole program and ignores its
    // user data, so a null pointer is fine.
    unsafe { sys::llama_log_set(Some(on_log), std::ptr::null_mut()) };
}

/// Clears the error lines recorded on this thread; call before an operation whose failure you
/// want to explain with [`take_errors`].
pub(super) fn clear_errors() {
    RECENT_ERRORS.with(|r| r.borrow_mut().clear());
}

/// The error lines logged on this thread since [`clear_errors`].
pub(super) fn take_errors() -> Vec<String> {
    RECENT_ERRORS.with(|r| std::mem::take(&mut *r.borrow_mut()))
}

pub(super) fn reason_suffix(reason: &[String]) -> String {
    if reason.is_empty() {
        String::new()
    } else {
        format!(": {}", reason.join("; "))
    }
}

extern "C" fn on_log(level: sys::ggml_log_level, text: *const c_char, _user: *mut c_void) {
    // Never unwind into C: everything below is caught.
    let _ = std::panic::catch_unwind(|| {
        if text.is_null() {
            return;
        }
        // SAFETY: ggml passes a NUL-terminated string that is valid for the duration of the call.
        let line = unsafe { CStr::from_ptr(text) }.to_string_lossy();
        if std::env::var_os("GGUFTUNE_LOG").is_some() {
            eprint!("{line}");
        }
        if level == sys::GGML_LOG_LEVEL_ERROR {
            let line = line.trim().to_owned();
            let _ = RECENT_ERRORS.try_with(|r| {
                if let Ok(mut r) = r.try_borrow_mut() {
                    if r.len() == KEPT_LINES {
                        r.remove(0);
                    }
                    r.push(line);
                }
            });
        }
    });
}
