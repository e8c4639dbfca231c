//! Numbers written into strings without the formatting machinery: the pipeline writes a few
//! per record (prefix lengths, octets, tables, ids), where `write!` costs more than the digits.

/// Appends `n` in decimal, as `write!(s, "{n}")` does.
pub fn push_decimal(s: &mut String, n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let mut n = n;
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // SAFETY: the bytes are ASCII digits.
    s.push_str(unsafe { std::str::from_utf8_unchecked(&buf[i..]) });
}

/// Writes `v` into `out` in decimal, zero-padded to fill it (fixed-width fields such as a
/// timestamp's `2023-11-14T22:13:20.000000005`); digits beyond its width are dropped.
pub fn write_padded(out: &mut [u8], mut v: u64) {
    for d in out.iter_mut().rev() {
        *d = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_what_display_writes() {
        for n in [0u64, 7, 10, 99, 255, 1000, 4_294_967_295, u64::MAX] {
            let mut s = String::from("x");
            push_decimal(&mut s, n);
            assert_eq!(s, format!("x{n}"));
        }
        let mut b = *b"xxxxx";
        write_padded(&mut b[1..4], 7);
        assert_eq!(&b, b"x007x");
        write_padded(&mut b[1..4], 12345);
        assert_eq!(&b, b"x345x");
    }
}
