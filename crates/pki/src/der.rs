//! Tiny DER helpers for the few encodings rcgen/aws-lc-rs do not expose.

use crate::PkiError;

/// Encode a DER length.
pub(crate) fn der_len(len: usize, out: &mut Vec<u8>) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
}

/// True when every character is allowed in an ASN.1 PrintableString.
pub(crate) fn is_printable(s: &str) -> bool {
    s.chars().all(|c| {
        c.is_ascii_alphanumeric()
            || matches!(
                c,
                ' ' | '\'' | '(' | ')' | '+' | ',' | '-' | '.' | '/' | ':' | '=' | '?'
            )
    })
}

/// DER encoding of a string as PrintableString when possible, else UTF8String.
pub(crate) fn der_string(s: &str) -> Vec<u8> {
    let mut out = vec![if is_printable(s) { 0x13 } else { 0x0c }];
    der_len(s.len(), &mut out);
    out.extend_from_slice(s.as_bytes());
    out
}

/// Read one TLV at the start of `input`: returns (tag, content, rest).
fn read_tlv(input: &[u8]) -> Result<(u8, &[u8], &[u8]), PkiError> {
    let bad = || PkiError::InvalidKey("malformed DER".into());
    let (&tag, rest) = input.split_first().ok_or_else(bad)?;
    let (&first, rest) = rest.split_first().ok_or_else(bad)?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return Err(bad());
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | *b as usize);
        (len, &rest[n..])
    };
    if rest.len() < len {
        return Err(bad());
    }
    Ok((tag, &rest[..len], &rest[len..]))
}

/// Modulus bytes (unsigned, no leading zero) of a DER RSAPublicKey.
pub(crate) fn rsa_modulus(rsa_public_key: &[u8]) -> Result<Vec<u8>, PkiError> {
    let (tag, seq, _) = read_tlv(rsa_public_key)?;
    let (itag, modulus, _) = read_tlv(seq)?;
    if tag != 0x30 || itag != 0x02 {
        return Err(PkiError::InvalidKey(
            "RSAPublicKey: unexpected structure".into(),
        ));
    }
    let skip = modulus.iter().take_while(|b| **b == 0).count();
    Ok(modulus[skip..].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lengths() {
        let mut v = Vec::new();
        der_len(300, &mut v);
        assert_eq!(v, vec![0x82, 0x01, 0x2c]);
        let s = "a".repeat(200);
        let d = der_string(&s);
        assert_eq!(&d[..3], &[0x13, 0x81, 200]);
        assert_eq!(der_string("a*b")[0], 0x0c);
        assert_eq!(der_string("a@b")[0], 0x0c);
    }
}
