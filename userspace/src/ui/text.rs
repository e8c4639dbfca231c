//! Fitting text into cells. Everything the TUI draws is counted in `char`s: the symbols it adds
//! (`›`, `…`, `█`, `✓`) are one cell wide, and plugin output is almost always ASCII.

/// `s` cut to `w` chars, ending in `…` when cut.
pub fn fit(s: &str, w: usize) -> String {
    let n = s.chars().count();
    if n <= w {
        return s.to_string();
    }
    if w == 0 {
        return String::new();
    }
    let mut out: String = s.chars().take(w - 1).collect();
    out.push('…');
    out
}

/// `s` cut or padded with spaces to exactly `w` chars.
pub fn pad(s: &str, w: usize) -> String {
    let mut out = fit(s, w);
    let n = out.chars().count();
    out.extend(std::iter::repeat_n(' ', w - n));
    out
}

/// `s` without its first `skip` chars (horizontal scrolling).
pub fn skip_chars(s: &str, skip: usize) -> &str {
    match s.char_indices().nth(skip) {
        Some((i, _)) => &s[i..],
        None if skip == 0 => s,
        None => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fitting() {
        assert_eq!(fit("bridge", 10), "bridge");
        assert_eq!(fit("bridge", 4), "bri…");
        assert_eq!(fit("bridge", 0), "");
        assert_eq!(pad("ab", 4), "ab  ");
        assert_eq!(pad("a›bcdef", 4), "a›b…");
        assert_eq!(skip_chars("a›bc", 2), "bc");
        assert_eq!(skip_chars("ab", 5), "");
    }
}
