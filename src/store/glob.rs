//! Glob matching as Redis's `stringmatchlen` (KEYS, SCAN MATCH): `*`, `?`, `[abc]`, `[^a]`,
//! `[a-z]`, and `\` to escape.
//!
//! Bounded time: a pattern like `a*a*a*…*b` backtracks exponentially in a naive matcher
//! (Redis CVE-2022-36021). As Redis's fix does, once a `*` has tried every remaining suffix
//! of the string and failed, no outer `*` can succeed with a shorter suffix either, so the
//! whole match fails at once. Each `*` then walks the string at most once per position of
//! the `*` before it, which bounds the work by pattern length × string length (see the
//! `steps_are_polynomial` test).

pub fn glob_match(pattern: &[u8], s: &[u8]) -> bool {
    let mut m = Matcher {
        skip_longer: false,
        #[cfg(test)]
        steps: 0,
    };
    m.match_from(pattern, s, 0)
}

struct Matcher {
    /// Set when a `*` failed against every suffix: any longer attempt fails too.
    skip_longer: bool,
    #[cfg(test)]
    steps: u64,
}

/// Deepest `*` nesting tried (Redis bounds it the same way); deeper patterns don't match.
const MAX_STAR_DEPTH: usize = 1000;

impl Matcher {
    fn match_from(&mut self, mut p: &[u8], mut s: &[u8], depth: usize) -> bool {
        if depth > MAX_STAR_DEPTH {
            return false;
        }
        while let Some(&c) = p.first() {
            #[cfg(test)]
            {
                self.steps += 1;
            }
            match c {
                b'*' => {
                    while p.len() > 1 && p[1] == b'*' {
                        p = &p[1..];
                    }
                    if p.len() == 1 {
                        return true;
                    }
                    for i in 0..=s.len() {
                        if self.match_from(&p[1..], &s[i..], depth + 1) {
                            return true;
                        }
                        if self.skip_longer {
                            return false;
                        }
                    }
                    self.skip_longer = true;
                    return false;
                }
                b'?' => {
                    if s.is_empty() {
                        return false;
                    }
                    s = &s[1..];
                }
                b'[' => {
                    let Some(&ch) = s.first() else { return false };
                    p = &p[1..];
                    let not = p.first() == Some(&b'^');
                    if not {
                        p = &p[1..];
                    }
                    let mut matched = false;
                    loop {
                        match p {
                            [] => break,
                            [b'\\', e, ..] => {
                                matched |= *e == ch;
                                p = &p[2..];
                            }
                            [b']', ..] => break,
                            [a, b'-', b, ..] if *b != b']' => {
                                let (lo, hi) = if a <= b { (*a, *b) } else { (*b, *a) };
                                matched |= (lo..=hi).contains(&ch);
                                p = &p[3..];
                            }
                            [a, ..] => {
                                matched |= *a == ch;
                                p = &p[1..];
                            }
                        }
                    }
                    if matched == not {
                        return false;
                    }
                    s = &s[1..];
                    if p.is_empty() {
                        // Unterminated class: Redis treats the end of pattern as its close.
                        return s.is_empty();
                    }
                }
                b'\\' if p.len() >= 2 => {
                    p = &p[1..];
                    if s.first() != Some(&p[0]) {
                        return false;
                    }
                    s = &s[1..];
                }
                _ => {
                    if s.first() != Some(&c) {
                        return false;
                    }
                    s = &s[1..];
                }
            }
            p = &p[1..];
        }
        s.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::glob_match as m;
    use super::Matcher;

    #[test]
    fn patterns() {
        assert!(m(b"*", b"anything"));
        assert!(m(b"h?llo", b"hello"));
        assert!(m(b"h*llo", b"heeello"));
        assert!(m(b"h[ae]llo", b"hallo"));
        assert!(!m(b"h[^e]llo", b"hello"));
        assert!(m(b"h[a-b]llo", b"hbllo"));
        assert!(m(b"key:\\*", b"key:*"));
        assert!(!m(b"key:\\*", b"key:x"));
        assert!(!m(b"a*b", b"acd"));
        assert!(m(b"user:*:name", b"user:42:name"));
        assert!(m(b"*a*b", b"xxaxxb"));
        assert!(!m(b"*a*b", b"xxaxxc"));
        assert!(m(b"a*", b"a"));
        assert!(!m(b"a*?", b"a"));
    }

    fn steps(p: &[u8], s: &[u8]) -> (bool, u64) {
        let mut mt = Matcher {
            skip_longer: false,
            steps: 0,
        };
        let r = mt.match_from(p, s, 0);
        (r, mt.steps)
    }

    /// The pattern of Redis's regression test for CVE-2022-36021: exponential in a naive
    /// matcher (it ran for minutes here), a few thousand steps now.
    #[test]
    fn cve_2022_36021_pattern_is_polynomial() {
        let key = [b'a'; 40];
        let pattern = b"a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b";
        let (matched, n) = steps(pattern, &key);
        assert!(!matched);
        let bound = (pattern.len() * (key.len() + 1)) as u64 * 2;
        assert!(
            n <= bound,
            "{n} steps for a {}×{} match",
            pattern.len(),
            key.len()
        );
    }

    /// Work grows with pattern length × string length, never exponentially, for the
    /// worst shapes (many stars, failing at the last character).
    #[test]
    fn steps_are_polynomial() {
        for stars in [1usize, 2, 5, 10, 50, 200] {
            for len in [10usize, 100, 1000] {
                let mut p = Vec::new();
                for _ in 0..stars {
                    p.extend_from_slice(b"a*");
                }
                p.push(b'b');
                let s = vec![b'a'; len];
                let (matched, n) = steps(&p, &s);
                assert!(!matched);
                let bound = (p.len() * (len + 1)) as u64 * 2;
                assert!(
                    n <= bound,
                    "{stars} stars, {len} bytes: {n} steps > {bound}"
                );
            }
        }
    }
}
