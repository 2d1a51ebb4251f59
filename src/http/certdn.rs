//! A client certificate's subject as nginx's `$ssl_client_s_dn` writes it: OpenSSL's
//! `X509_NAME_print_ex` with `XN_FLAG_RFC2253` (every attribute in reverse order, the last
//! RDN first and inside a multi-valued RDN the last attribute first, `,`
//! between RDNs and `+` inside one, short names, special characters escaped with `\`, bytes
//! of non-ASCII characters and control characters as `\XX`, values that are not strings and
//! attributes of unknown types as `#` and the hex of their DER). Zimbra's certauth lookup
//! sends this text as the user name, and the servlet maps it to an account, so it must be
//! the same bytes nginx sends. Sans-I/O; the certificate is parsed by `x509-parser`.
#![forbid(unsafe_code)]

use x509_parser::der_parser::asn1_rs::{Any, Tag};
use x509_parser::prelude::{FromDer, X509Certificate};

/// OpenSSL's short names for the attribute types a subject carries (the others are written
/// as a dotted OID, their value as DER hex).
const SHORT_NAMES: [(&str, &str); 24] = [
    ("2.5.4.3", "CN"),
    ("2.5.4.4", "SN"),
    ("2.5.4.5", "serialNumber"),
    ("2.5.4.6", "C"),
    ("2.5.4.7", "L"),
    ("2.5.4.8", "ST"),
    ("2.5.4.9", "street"),
    ("2.5.4.10", "O"),
    ("2.5.4.11", "OU"),
    ("2.5.4.12", "title"),
    ("2.5.4.13", "description"),
    ("2.5.4.15", "businessCategory"),
    ("2.5.4.17", "postalCode"),
    ("2.5.4.41", "name"),
    ("2.5.4.42", "GN"),
    ("2.5.4.43", "initials"),
    ("2.5.4.44", "generationQualifier"),
    ("2.5.4.46", "dnQualifier"),
    ("2.5.4.65", "pseudonym"),
    ("2.5.4.97", "organizationIdentifier"),
    ("0.9.2342.19200300.100.1.1", "UID"),
    ("0.9.2342.19200300.100.1.25", "DC"),
    ("1.2.840.113549.1.9.1", "emailAddress"),
    ("1.3.6.1.4.1.311.60.2.1.3", "jurisdictionC"),
];

/// The subject of a DER certificate, or None if it does not parse.
pub fn subject_dn(der: &[u8]) -> Option<String> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let mut out = String::new();
    let rdns: Vec<_> = cert.subject().iter().collect();
    for (i, rdn) in rdns.iter().rev().enumerate() {
        if i > 0 {
            out.push(',');
        }
        // OpenSSL reverses its flat list of attributes: inside a multi-valued RDN too
        let atvs: Vec<_> = rdn.iter().collect();
        for (j, atv) in atvs.iter().rev().enumerate() {
            if j > 0 {
                out.push('+');
            }
            let oid = atv.attr_type().to_id_string();
            match SHORT_NAMES.iter().find(|(o, _)| *o == oid) {
                Some((_, name)) => {
                    out.push_str(name);
                    out.push('=');
                    value(&mut out, atv.attr_value());
                }
                None => {
                    out.push_str(&oid);
                    out.push('=');
                    dump(&mut out, atv.attr_value());
                }
            }
        }
    }
    Some(out)
}

/// A value: a string type as escaped UTF-8, anything else dumped.
fn value(out: &mut String, v: &Any<'_>) {
    let data = v.data;
    let text: Option<String> = match v.tag() {
        Tag::Utf8String => std::str::from_utf8(data).ok().map(str::to_owned),
        Tag::PrintableString
        | Tag::Ia5String
        | Tag::NumericString
        | Tag::VisibleString
        // T61String: OpenSSL takes its bytes as Latin-1
        | Tag::T61String => Some(data.iter().map(|&b| char::from(b)).collect()),
        Tag::BmpString => {
            let units: Vec<u16> = data
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            data.len().is_multiple_of(2)
                .then(|| String::from_utf16(&units).ok())
                .flatten()
        }
        Tag::UniversalString => data.len().is_multiple_of(4)
            .then(|| {
                data.chunks_exact(4)
                    .map(|c| char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
                    .collect::<Option<String>>()
            })
            .flatten(),
        _ => None,
    };
    match text {
        Some(t) => escape(out, &t),
        None => dump(out, v),
    }
}

/// RFC 2253 escaping as OpenSSL does it (`ASN1_STRFLGS_RFC2253`).
fn escape(out: &mut String, text: &str) {
    use std::fmt::Write as _;
    let bytes = text.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        let first = i == 0;
        let last = i + 1 == bytes.len();
        match b {
            b',' | b'+' | b'"' | b'\\' | b'<' | b'>' | b';' => {
                out.push('\\');
                out.push(char::from(b));
            }
            b'#' if first => out.push_str("\\#"),
            b' ' if first || last => out.push_str("\\ "),
            0..=0x1f | 0x7f..=0xff => {
                let _ = write!(out, "\\{b:02X}");
            }
            _ => out.push(char::from(b)),
        }
    }
}

/// `#` and the hex of the value's whole DER encoding (tag, length, content).
fn dump(out: &mut String, v: &Any<'_>) {
    use std::fmt::Write as _;
    out.push('#');
    let mut der = Vec::new();
    if x509_parser::der_parser::asn1_rs::ToDer::write_der(v, &mut der).is_err() {
        der.clear();
    }
    for b in der {
        let _ = write!(out, "{b:02X}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_characters_and_non_ascii_are_escaped_as_openssl_does() {
        let mut s = String::new();
        escape(&mut s, "#Smith, John+\"Jr\" <a;b>\\ ");
        assert_eq!(s, "\\#Smith\\, John\\+\\\"Jr\\\" \\<a\\;b\\>\\\\\\ ");
        let mut s = String::new();
        escape(&mut s, " jürgen\tx#");
        assert_eq!(s, "\\ j\\C3\\BCrgen\\09x#");
    }

    /// Certificates made by openssl (fuzz/seeds/cert_dn), against what
    /// `openssl x509 -noout -subject -nameopt RFC2253` printed for them.
    #[test]
    fn subjects_are_written_as_openssl_writes_them() {
        let seed = |name: &str| {
            let path = format!("{}/fuzz/seeds/cert_dn/{name}", env!("CARGO_MANIFEST_DIR"));
            std::fs::read(path).unwrap()
        };
        assert_eq!(
            subject_dn(&seed("utf8-multivalued.der")).unwrap(),
            "emailAddress=j@example.com,CN=J\\C3\\BCrgen Smith+UID=js,O=Example\\, Inc.,DC=example,DC=com"
        );
        assert_eq!(
            subject_dn(&seed("escapes.der")).unwrap(),
            "O=tab\\09x,CN=\\ #lead\\, \\\"q\\\" \\<x\\>\\;y\\\\z\\ "
        );
    }

    #[test]
    fn garbage_is_not_a_certificate() {
        assert_eq!(subject_dn(b""), None);
        assert_eq!(subject_dn(b"\x30\x03\x02\x01\x00"), None);
    }
}
