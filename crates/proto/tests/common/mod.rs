//! Reads the hex examples of protocol.md (fenced blocks labelled `hex <name>`), for the test
//! files that check them against the codec (spec_examples.rs, peer_spec_examples.rs).

// Each test crate that includes this module uses only part of it.
#![allow(dead_code)]

/// Parses hex with any whitespace and `|` separators in it (as laid out in protocol.md).
pub fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s
        .bytes()
        .filter(|b| !b.is_ascii_whitespace() && *b != b'|')
        .collect();
    assert_eq!(digits.len() % 2, 0, "odd number of hex digits");
    digits
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
        .collect()
}

/// protocol.md, as built into this test.
pub const SPEC: &str = include_str!("../../../../protocol.md");

/// The labelled hex blocks of protocol.md: (name, bytes, byte count its prose announces).
pub fn spec_examples() -> Vec<(String, Vec<u8>, Option<usize>)> {
    let lines: Vec<&str> = SPEC.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let Some(name) = lines[i].strip_prefix("```hex") else {
            i += 1;
            continue;
        };
        let name = name.trim().to_string();
        assert!(
            !name.is_empty(),
            "a ```hex block without a name at line {}",
            i + 1
        );
        // "(N bytes" in the prose just above the block.
        let announced = lines[..i]
            .iter()
            .rev()
            .find(|l| !l.trim().is_empty())
            .and_then(|l| {
                let at = l.rfind(" bytes")?;
                let digits = l[..at].rsplit('(').next()?;
                digits.parse().ok()
            });
        let mut bytes = Vec::new();
        i += 1;
        while i < lines.len() && lines[i] != "```" {
            bytes.extend(hex_line(lines[i], &name));
            i += 1;
        }
        assert!(i < lines.len(), "example {name} is not closed");
        out.push((name, bytes, announced));
        i += 1;
    }
    out
}

/// One line of an example: hex bytes separated by single spaces, then (after two or more
/// spaces) a comment. Anything else in the bytes part is an error, not the end of the bytes.
pub fn hex_line(line: &str, name: &str) -> Vec<u8> {
    let bytes = match line.find("  ") {
        Some(at) => &line[..at],
        None => line,
    };
    bytes
        .split(' ')
        .filter(|t| !t.is_empty())
        .map(|t| {
            assert!(
                t.len() == 2 && t.bytes().all(|b| b.is_ascii_hexdigit()),
                "example {name}: {t:?} is not a hex byte in line {line:?}"
            );
            u8::from_str_radix(t, 16).expect("checked hex")
        })
        .collect()
}

/// The bytes of the example `name` in protocol.md.
pub fn example(name: &str) -> Vec<u8> {
    let mut found = spec_examples().into_iter().filter(|(n, _, _)| n == name);
    let (_, bytes, announced) = found
        .next()
        .unwrap_or_else(|| panic!("protocol.md has no ```hex {name} example"));
    assert!(found.next().is_none(), "two ```hex {name} examples");
    assert_eq!(
        announced,
        Some(bytes.len()),
        "the prose before example {name} must say \"({} bytes\"",
        bytes.len()
    );
    // The length field counts what follows it.
    assert!(bytes.len() >= 16, "example {name} is shorter than a header");
    let len = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
    assert_eq!(
        len + 4,
        bytes.len(),
        "example {name}: length field vs bytes"
    );
    bytes
}
