//! Fuzzes the frame parser: any bytes, any ingress port. It must never
//! panic, and any offsets it returns must lie inside the frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use microseg_dataplane::packet::parse_frame;

fuzz_target!(|data: &[u8]| {
    if let Ok(parsed) = parse_frame(data, 1) {
        assert!(usize::from(parsed.l3_end) <= data.len());
        assert!(parsed.l3_offset <= parsed.l3_end);
        if let Some(l4) = parsed.l4_offset {
            assert!(l4 <= parsed.l3_end);
        }
        if let Some(quote) = parsed.icmp_error_quote {
            assert!(quote <= parsed.l3_end);
        }
    }
});
