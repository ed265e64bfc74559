//! Arbitrary bytes into the batch decoder: it must reject or decode, never panic;
//! and a reader resuming inside a batch must get what decoding it whole gets.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let n = logqueue::fuzz_decode_batch(data);
    // A batch header is 60 bytes and every record takes at least 7 more
    // (length, attributes, timestamp delta, offset delta, key, value, header count).
    assert!(
        n == 0 || data.len() >= 60 + 7 * n,
        "{n} records from {} bytes",
        data.len()
    );
    assert!(
        logqueue::fuzz_skip_agrees(data),
        "resuming inside the batch disagrees with decoding it whole"
    );
});
