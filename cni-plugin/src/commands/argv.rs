//! Splitting one command string into argv, the way a user expects from a shell line but with
//! none of a shell's powers: no expansion, no redirection, no command separators.

/// Characters a shell would act on. They are refused anywhere in a command, even inside quotes:
/// the plugin never uses a shell, and refusing them outright makes "was this meant for a
/// shell?" impossible to get wrong.
const SHELL_META: &[char] = &[
    ';', '&', '|', '<', '>', '`', '$', '(', ')', '{', '}', '*', '?', '[', ']', '~', '!', '#', '\\',
    '^',
];

/// Splits `text` into words. Single and double quotes group words (and are removed); there are
/// no escapes. `Err` says why the text was refused.
pub fn split(text: &str, max_len: usize) -> Result<Vec<String>, String> {
    if text.len() > max_len {
        return Err(format!(
            "command is {} bytes long, over the limit of {max_len}",
            text.len()
        ));
    }
    for c in text.chars() {
        if SHELL_META.contains(&c) {
            return Err(format!(
                "shell metacharacter {c:?} refused: commands run without a shell"
            ));
        }
        if c == '\n' || c == '\r' {
            return Err("line break refused: one command per list entry".into());
        }
        if c.is_control() && c != '\t' {
            return Err(format!("control character U+{:04X} refused", c as u32));
        }
        if !c.is_ascii() {
            return Err(format!("non-ASCII character U+{:04X} refused", c as u32));
        }
    }
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    for c in text.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => cur.push(c),
            None if c == '\'' || c == '"' => {
                quote = Some(c);
                in_word = true;
            }
            None if c == ' ' || c == '\t' => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            None => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if let Some(q) = quote {
        return Err(format!("unterminated {q} quote"));
    }
    if in_word {
        words.push(cur);
    }
    if words.is_empty() {
        return Err("empty command".into());
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Vec<String> {
        split(s, 1000).unwrap()
    }

    #[test]
    fn words_and_quotes() {
        assert_eq!(ok("ip route"), ["ip", "route"]);
        assert_eq!(ok("  ip   -j\taddr  "), ["ip", "-j", "addr"]);
        assert_eq!(
            ok("ip link set dev 'my dev' mtu 1400"),
            ["ip", "link", "set", "dev", "my dev", "mtu", "1400"]
        );
        assert_eq!(ok("ip \"a\"'b'c"), ["ip", "abc"]);
        assert_eq!(ok("ip ''"), ["ip", ""]);
        assert_eq!(ok("ip \"it's\""), ["ip", "it's"]);
    }

    #[test]
    fn refusals_say_why() {
        let cases = [
            ("ip route; rm -rf /", "metacharacter ';'"),
            ("ip route && reboot", "metacharacter '&'"),
            ("ip route | sh", "metacharacter '|'"),
            ("ip route > /etc/passwd", "metacharacter '>'"),
            ("ip $(id)", "metacharacter '$'"),
            ("ip `id`", "metacharacter '`'"),
            ("ip 'a;b'", "metacharacter ';'"),
            ("ip route\nip addr", "line break"),
            ("ip \u{7}", "control character"),
            ("ip r\u{e9}", "non-ASCII"),
            ("ip 'route", "unterminated ' quote"),
            ("   ", "empty command"),
            ("", "empty command"),
        ];
        for (text, want) in cases {
            let e = split(text, 1000).unwrap_err();
            assert!(e.contains(want), "{text:?}: {e}");
        }
        assert!(
            split(&"a".repeat(11), 10)
                .unwrap_err()
                .contains("over the limit")
        );
    }
}
