//! Label selectors (`--label-selector`, src/selector.rs).
//!
//! Input: UTF-8 text. Line 1 is selector A, line 2 selector B, every further line a label
//! `key=value` (or a bare `key` with an empty value).
//!
//! Properties: parsing never panics; the rendered selector parses back to the same selector; and
//! `A,B` parses exactly when A and B both do, and then matches a label set exactly when both A
//! and B match it (the comma is a conjunction).
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use portier::selector::LabelSelector;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut lines = text.split('\n');
    let a = lines.next().unwrap_or_default();
    let b = lines.next().unwrap_or_default();
    let labels: BTreeMap<String, String> =
        lines.map(|l| l.split_once('=').unwrap_or((l, ""))).map(|(k, v)| (k.to_string(), v.to_string())).collect();

    let parsed_a = LabelSelector::parse(a);
    let parsed_b = LabelSelector::parse(b);
    for (input, parsed) in [(a, &parsed_a), (b, &parsed_b)] {
        let Ok(selector) = parsed else { continue };
        let rendered = selector.to_string();
        assert_eq!(LabelSelector::parse(&rendered).as_ref(), Ok(selector), "{input:?} rendered as {rendered:?}");
        // Matching is total: with or without labels, never a panic.
        let _ = selector.matches(None);
        if selector.is_everything() {
            assert!(selector.matches(None) && selector.matches(Some(&labels)), "{input:?} selects everything");
        }
    }

    // A selector that parses has balanced parentheses, so the comma between A and B is a top-level
    // one: the joined selector is exactly the conjunction.
    let joined = LabelSelector::parse(&format!("{a},{b}"));
    match (&parsed_a, &parsed_b, &joined) {
        (Ok(sa), Ok(sb), Ok(sj)) => {
            for l in [None, Some(&labels)] {
                assert_eq!(sj.matches(l), sa.matches(l) && sb.matches(l), "{a:?} , {b:?} with labels {l:?}");
            }
        }
        (Ok(_), Ok(_), Err(e)) => panic!("{a:?} and {b:?} parse alone but not joined: {e}"),
        _ => {}
    }
});
