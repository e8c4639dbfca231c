//! Any ring-buffer record: decoding must give an event or an `Undecodable`, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = cniscope::events::decode::decode(data);
});
