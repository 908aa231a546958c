//! productpage's signed client-side session cookie. The key is a constant of
//! the app, as upstream, so a cookie is valid on every replica.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use http::HeaderMap;
use sha2::Sha256;

pub(crate) const COOKIE: &str = "session";
const KEY: &[u8] = b"kite-bookinfo productpage session signing key";

#[derive(serde::Serialize, serde::Deserialize)]
struct Session {
    user: String,
}

/// `payload.signature`, both URL-safe base64.
pub(crate) fn sign(user: &str) -> String {
    let payload = serde_json::to_vec(&Session {
        user: user.to_owned(),
    })
    .unwrap_or_default();
    let payload = URL_SAFE_NO_PAD.encode(payload);
    let signature = URL_SAFE_NO_PAD.encode(mac(payload.as_bytes()).finalize().into_bytes());
    format!("{payload}.{signature}")
}

/// The user of a validly signed session cookie among the request's cookies.
pub(crate) fn user(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(name, _)| *name == COOKIE)
        .find_map(|(_, value)| verify(value))
}

fn verify(value: &str) -> Option<String> {
    let (payload, signature) = value.split_once('.')?;
    let signature = URL_SAFE_NO_PAD.decode(signature).ok()?;
    mac(payload.as_bytes()).verify_slice(&signature).ok()?;
    let session: Session = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
    Some(session.user).filter(|u| !u.is_empty())
}

fn mac(data: &[u8]) -> Hmac<Sha256> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(KEY).unwrap_or_else(|_| unreachable!());
    mac.update(data);
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cookie(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(http::header::COOKIE, value.parse().unwrap());
        h
    }

    #[test]
    fn round_trip() {
        let signed = sign("jason");
        assert_eq!(
            user(&cookie(&format!("a=b; session={signed}"))).as_deref(),
            Some("jason")
        );
    }

    #[test]
    fn rejects_tampering() {
        let signed = sign("jason");
        let (payload, sig) = signed.split_once('.').unwrap();
        let forged = URL_SAFE_NO_PAD.encode(br#"{"user":"admin"}"#);
        assert_eq!(user(&cookie(&format!("session={forged}.{sig}"))), None);
        assert_eq!(user(&cookie(&format!("session={payload}.AAAA"))), None);
        assert_eq!(user(&cookie(&format!("session={payload}"))), None);
        assert_eq!(user(&cookie("session=")), None);
        assert_eq!(user(&HeaderMap::new()), None);
    }
}
