//! Chat-template compilation and rendering with a hostile template and hostile messages. The input
//! is split at the first `0xFF` byte (never valid UTF-8): the first part is the template source,
//! the second the messages, one per line as `role<TAB>content`. Renders run under small limits so
//! that a template that runs out of fuel or output does so in milliseconds.
#![no_main]

use gguftune::data::{ChatTemplate, Message, TemplateLimits};
use libfuzzer_sys::fuzz_target;

/// Fuel per render: enough for the real templates of the seeds, small enough to run fast.
const FUEL: u64 = 200_000;
/// Output cap per render.
const MAX_OUTPUT_BYTES: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let (source, messages) = match data.iter().position(|&b| b == 0xFF) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &b"system\tYou are terse.\nuser\tHi\nassistant\tHello"[..]),
    };
    let Ok(source) = std::str::from_utf8(source) else { return };
    let messages: Vec<Message> = String::from_utf8_lossy(messages)
        .lines()
        .map(|line| match line.split_once('\t') {
            Some((role, content)) => Message::new(role, content),
            None => Message::new("user", line),
        })
        .collect();
    let limits = TemplateLimits { fuel: FUEL, max_output_bytes: MAX_OUTPUT_BYTES };
    let Ok(template) = ChatTemplate::with_limits(source, "<s>", "</s>", limits) else { return };
    for add_generation_prompt in [false, true] {
        if let Ok(text) = template.render(&messages, add_generation_prompt) {
            assert!(text.len() <= MAX_OUTPUT_BYTES, "output stays under the cap: {} bytes", text.len());
        }
    }
});
