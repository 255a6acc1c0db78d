//! Fuzzes the automerge-repo wire decoder (`wire::decode`), which reads every frame any client sends to `/sync`:
//! it must return a message or an error for any bytes, never panic; a decoded message must encode and decode
//! to itself.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|frame: &[u8]| {
    if let Ok(message) = wire::decode(frame) {
        let again = wire::decode(&message.encode()).expect("an encoded message decodes");
        assert_eq!(
            again, message,
            "decode ∘ encode is the identity on decoded messages"
        );
    }
});
