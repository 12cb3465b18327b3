//! JSON written by hand for the long answers (the service lists): straight from the shared
//! records into one buffer, with no owned copy of a record and no `fmt` machinery on the
//! way. Every writer here produces exactly the bytes `serde_json` produces for the owned
//! types it stands in for; the tests compare them.
//!
//! - [`time`]: RFC 3339 times (the native API) and Cinder's naive UTC times;
//! - [`service`]: a service as `GET /v1/services` lists it ([`crate::wire::ServiceOut`]);
//! - [`list`]: the `{"services":[...]}` answer around the rows, written off the async
//!   runtime and streamed when long;

pub mod list;
pub mod service;
pub mod time;

/// Appends `s` as a JSON string, escaped as `serde_json` escapes it: `"` and `\` with a
/// backslash, `\b \t \n \f \r` by name, the other control characters below U+0020 as
/// `\u00xx` (lowercase hex), everything else (`/`, DEL, non-ASCII) as is.
pub fn push_str(buf: &mut Vec<u8>, s: &str) {
    buf.push(b'"');
    let bytes = s.as_bytes();
    if !needs_escaping(bytes) {
        buf.extend_from_slice(bytes);
        buf.push(b'"');
        return;
    }
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if !ESCAPED[usize::from(b)] {
            continue;
        }
        buf.extend_from_slice(&bytes[start..i]);
        push_escape(buf, b);
        start = i + 1;
    }
    buf.extend_from_slice(&bytes[start..]);
    buf.push(b'"');
}

/// Whether any byte of `bytes` is one [`push_str`] escapes, looked at eight bytes at a time
/// (the strings of a record are nearly always plain: this is most of a long list's scan).
fn needs_escaping(bytes: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    // Whether some byte of `w` is below `n` (exact for n <= 0x80: the classic "has less").
    let has_below = |w: u64, n: u8| w.wrapping_sub(ONES * u64::from(n)) & !w & HIGHS != 0;
    let has_byte = |w: u64, b: u8| has_below(w ^ (ONES * u64::from(b)), 1);
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        let mut w = [0u8; 8];
        w.copy_from_slice(word);
        let w = u64::from_ne_bytes(w);
        if has_below(w, 0x20) || has_byte(w, b'"') || has_byte(w, b'\\') {
            return true;
        }
    }
    words.remainder().iter().any(|&b| ESCAPED[usize::from(b)])
}

/// The bytes [`push_str`] escapes: control characters, `"` and `\\`.
const ESCAPED: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = true;
        b += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table
};

fn push_escape(buf: &mut Vec<u8>, b: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let short = match b {
        b'"' => b'"',
        b'\\' => b'\\',
        0x08 => b'b',
        0x09 => b't',
        0x0a => b'n',
        0x0c => b'f',
        0x0d => b'r',
        _ => {
            buf.extend_from_slice(b"\\u00");
            buf.push(HEX[usize::from(b >> 4)]);
            buf.push(HEX[usize::from(b & 0xf)]);
            return;
        }
    };
    buf.push(b'\\');
    buf.push(short);
}

/// Appends `s` as a JSON string, or `null`.
pub fn push_opt_str(buf: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => push_str(buf, s),
        None => buf.extend_from_slice(b"null"),
    }
}

/// Appends `v` in decimal.
pub fn push_u64(buf: &mut Vec<u8>, mut v: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    buf.extend_from_slice(&digits[i..]);
}

/// Appends `true` or `false`.
pub fn push_bool(buf: &mut Vec<u8>, v: bool) {
    buf.extend_from_slice(if v { b"true" } else { b"false" });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pushed(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut buf = Vec::new();
        f(&mut buf);
        String::from_utf8(buf).unwrap_or_else(|e| panic!("not UTF-8: {e}"))
    }

    fn serde(v: &impl serde::Serialize) -> String {
        serde_json::to_string(v).unwrap_or_else(|e| panic!("serde_json failed: {e}"))
    }

    /// Every ASCII character alone and inside text, some non-ASCII ones, and mixes.
    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        let mut samples: Vec<String> = (0u8..=0x7f)
            .map(char::from)
            .flat_map(|c| [c.to_string(), format!("a{c}b"), format!("{c}{c}xyz{c}")])
            .collect();
        samples.extend(
            [
                "",
                "node1@lvm#pool",
                "é日本\u{2028}\u{2029}\u{feff}😀",
                "\"quoted\" \\back\\ /slash/ \u{7f}",
                "tab\there\nnew\r\u{0}\u{1f}\u{1b}[0m",
            ]
            .map(String::from),
        );
        // Every length up to three words, plain and with each escaped byte at each position
        // (the word-wise scan), next to bytes just above and below the ones it looks for.
        for len in 0..=24 {
            samples.push("a".repeat(len));
            samples.push("\u{80}é!#[]".chars().cycle().take(len).collect());
            for at in 0..len {
                for c in [
                    '"', '\\', '\u{0}', '\u{1f}', '\n', '\u{7f}', ' ', '!', '#', '[', ']',
                ] {
                    let mut s: Vec<char> = "x".repeat(len).chars().collect();
                    s[at] = c;
                    samples.push(s.into_iter().collect());
                }
            }
        }
        for s in samples {
            assert_eq!(pushed(|b| push_str(b, &s)), serde(&s), "{s:?}");
            let escaped = s.bytes().any(|b| ESCAPED[usize::from(b)]);
            assert_eq!(needs_escaping(s.as_bytes()), escaped, "{s:?}");
        }
        assert_eq!(pushed(|b| push_opt_str(b, None)), serde(&None::<&str>));
        assert_eq!(
            pushed(|b| push_opt_str(b, Some("x\"y"))),
            serde(&Some("x\"y"))
        );
    }

    #[test]
    fn numbers_and_booleans_as_serde_json_writes_them() {
        for v in [
            0,
            1,
            9,
            10,
            99,
            100,
            12_345,
            u64::from(u32::MAX),
            u64::MAX - 1,
            u64::MAX,
        ] {
            assert_eq!(pushed(|b| push_u64(b, v)), serde(&v));
        }
        for v in [true, false] {
            assert_eq!(pushed(|b| push_bool(b, v)), serde(&v));
        }
    }
}
