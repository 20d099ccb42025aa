//! Fuzzes the filter parser, the printer round trip, PATCH paths and attribute lists.
#![no_main]

use cairn_scim::{Filter, PatchPath, parse_attribute_list};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(filter) = Filter::parse(text) {
        let printed = filter.to_string();
        assert_eq!(Filter::parse(&printed).ok(), Some(filter), "round trip of {printed:?}");
    }
    if let Ok(path) = PatchPath::parse(text) {
        let printed = path.to_string();
        assert!(PatchPath::parse(&printed).is_ok(), "re-parse of {printed:?}");
    }
    let _ = parse_attribute_list(text);
});
