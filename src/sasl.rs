//! SASL PLAIN (RFC 4616) and LOGIN (draft-murchison-sasl-login) decoding and encoding,
//! shared by the IMAP and POP3 state machines. Sans-I/O: bytes in, values out.
#![forbid(unsafe_code)]

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use crate::secret::Secret;

/// The credentials carried by a PLAIN response.
#[derive(Debug, PartialEq, Eq)]
pub struct Plain {
    pub authzid: Vec<u8>,
    pub authcid: Vec<u8>,
    pub password: Secret,
}

/// Why a SASL response was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SaslError {
    #[error("invalid base64")]
    Base64,
    #[error("malformed PLAIN response")]
    Malformed,
}

/// Decode base64 as sent in a SASL exchange. The RFC 4959 empty response `=` decodes to
/// nothing; callers decide whether empty is acceptable.
pub fn decode_b64(data: &[u8]) -> Result<Vec<u8>, SaslError> {
    if data == b"=" {
        return Ok(Vec::new());
    }
    STANDARD.decode(data).map_err(|_| SaslError::Base64)
}

pub fn encode_b64(data: &[u8]) -> String {
    STANDARD.encode(data)
}

/// Decode a base64 PLAIN response `[authzid] NUL authcid NUL passwd`.
pub fn decode_plain(b64: &[u8]) -> Result<Plain, SaslError> {
    let raw = Secret::new(decode_b64(b64)?);
    let mut parts = raw.expose().splitn(3, |&b| b == 0);
    let (Some(authzid), Some(authcid), Some(password)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(SaslError::Malformed);
    };
    if authcid.is_empty() {
        return Err(SaslError::Malformed);
    }
    Ok(Plain {
        authzid: authzid.to_vec(),
        authcid: authcid.to_vec(),
        password: Secret::from(password),
    })
}

/// Encode a PLAIN response for the backend (base64 of `authzid NUL authcid NUL password`).
pub fn encode_plain(authzid: &[u8], authcid: &[u8], password: &[u8]) -> Secret {
    let raw = Secret::concat(&[authzid, b"\0", authcid, b"\0", password]);
    let mut b64 = vec![0; base64::encoded_len(raw.len(), true).unwrap_or(0)];
    let n = STANDARD
        .encode_slice(raw.expose(), &mut b64)
        .expect("the buffer has the encoded length");
    b64.truncate(n);
    Secret::new(b64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_round_trip() {
        let enc = encode_plain(b"", b"alice", b"pw");
        assert_eq!(enc.expose(), b"AGFsaWNlAHB3");
        assert_eq!(
            decode_plain(enc.expose()).unwrap(),
            Plain {
                authzid: vec![],
                authcid: b"alice".to_vec(),
                password: Secret::from(&b"pw"[..])
            }
        );
        let enc = encode_plain(b"boss", b"alice", b"");
        assert_eq!(decode_plain(enc.expose()).unwrap().authzid, b"boss");
    }

    #[test]
    fn plain_errors() {
        assert_eq!(decode_plain(b"!!"), Err(SaslError::Base64));
        assert_eq!(decode_plain(b"="), Err(SaslError::Malformed));
        assert_eq!(
            decode_plain(encode_b64(b"alice\0pw").as_bytes()),
            Err(SaslError::Malformed)
        );
        assert_eq!(
            decode_plain(encode_b64(b"\0\0pw").as_bytes()),
            Err(SaslError::Malformed)
        );
    }
}
