//! Fuzz target `resume_token`: `brook_changestream::decode_resume_token{,_hex}` never
//! panics, and whatever it reads back agrees with the bytes it was given.
#![no_main]

use brook_changestream::{decode_resume_token, decode_resume_token_hex};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // The input as the `_data` string itself (mostly not hex: must be refused quietly).
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = decode_resume_token_hex(text);
    }

    // The input as the bytes the hex stands for: exercises the KeyString reader.
    let hex: String = data.iter().map(|b| format!("{b:02X}")).collect();
    let info = decode_resume_token_hex(&hex);
    match data {
        [0x82, t0, t1, t2, t3, i0, i1, i2, i3, ..] => {
            let info = info.as_ref().expect("a Timestamp first is always read");
            assert_eq!(
                info.cluster_time.time,
                u32::from_be_bytes([*t0, *t1, *t2, *t3])
            );
            assert_eq!(
                info.cluster_time.increment,
                u32::from_be_bytes([*i0, *i1, *i2, *i3])
            );
            if info.fragment_num.is_some() {
                // Only version 2 event tokens carry a fragment number.
                assert_eq!(info.version, Some(2));
                assert!(info.event_type.is_some());
            }
        }
        _ => assert!(info.is_none(), "no cluster time, no info"),
    }
    // Lowercase reads the same.
    assert_eq!(decode_resume_token_hex(&hex.to_ascii_lowercase()), info);

    // The input as a whole token document.
    if let Ok(doc) = bson::RawDocument::from_bytes(data) {
        let _ = decode_resume_token(doc);
    }
});
