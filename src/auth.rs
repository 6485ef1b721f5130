//! Who may open a session: the Origin allow-list and signed join tokens.
//! Applied identically to the WebSocket upgrade and the WebTransport
//! CONNECT. Pure: headers, query strings and `now` in, decisions out.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Origins allowed to open sessions.
#[derive(Debug, Clone)]
pub struct OriginPolicy {
    allowed: Vec<String>,
    any: bool,
    /// Development mode: loopback origins on any port are allowed too.
    dev_loopback: bool,
}

impl OriginPolicy {
    pub fn new(allow: &[String], dev_loopback: bool) -> Self {
        OriginPolicy {
            any: allow.iter().any(|o| o.trim() == "*"),
            allowed: allow
                .iter()
                .map(|o| o.trim().trim_end_matches('/').to_ascii_lowercase())
                .filter(|o| !o.is_empty() && o != "*")
                .collect(),
            dev_loopback,
        }
    }

    /// `origin` is the request's Origin header, if any. Requests without one
    /// come from native clients, which could send any Origin they liked; the
    /// check exists to stop other sites' pages from using a player's browser.
    pub fn allows(&self, origin: Option<&str>) -> bool {
        let Some(origin) = origin else {
            return true;
        };
        let origin = origin.trim().to_ascii_lowercase();
        if self.any || self.allowed.contains(&origin) {
            return true;
        }
        self.dev_loopback && is_loopback_origin(&origin)
    }
}

fn is_loopback_origin(origin: &str) -> bool {
    let Some(rest) = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
    else {
        return false;
    };
    let host = if let Some(v6) = rest.strip_prefix('[') {
        match v6.split_once(']') {
            Some((h, tail)) if tail.is_empty() || tail.starts_with(':') => h,
            _ => return false,
        }
    } else {
        let host = rest.split(':').next().unwrap_or("");
        // "host:port" must have only digits after the colon.
        if let Some((_, port)) = rest.split_once(':') {
            if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
                return false;
            }
        }
        host
    };
    matches!(host, "localhost" | "127.0.0.1" | "::1")
}

/// What a join token grants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claims {
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// The only room this token may join; any room when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("no token")]
    Missing,
    #[error("malformed token")]
    Malformed,
    #[error("bad token signature")]
    BadSignature,
    #[error("token expired")]
    Expired,
}

/// Signs and checks join tokens: `base64url(claims JSON) "." base64url(HMAC-SHA256)`.
#[derive(Clone)]
pub struct TokenKey {
    secret: Vec<u8>,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

impl TokenKey {
    pub fn new(secret: &[u8]) -> Self {
        TokenKey {
            secret: secret.to_vec(),
        }
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC takes keys of any length.
        HmacSha256::new_from_slice(&self.secret).expect("HMAC accepts any key length")
    }

    pub fn sign(&self, claims: &Claims) -> String {
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
        let mut mac = self.mac();
        mac.update(payload.as_bytes());
        let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{payload}.{sig}")
    }

    pub fn verify(&self, token: &str, now_unix: u64) -> Result<Claims, TokenError> {
        let (payload, sig) = token.split_once('.').ok_or(TokenError::Malformed)?;
        let sig = URL_SAFE_NO_PAD
            .decode(sig)
            .map_err(|_| TokenError::Malformed)?;
        let mut mac = self.mac();
        mac.update(payload.as_bytes());
        // Constant-time comparison.
        mac.verify_slice(&sig)
            .map_err(|_| TokenError::BadSignature)?;
        let json = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| TokenError::Malformed)?;
        let claims: Claims = serde_json::from_slice(&json).map_err(|_| TokenError::Malformed)?;
        if claims.exp <= now_unix {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }
}

/// The `token` parameter of a request's query string, percent-decoded.
pub fn token_from_query(query: Option<&str>) -> Option<String> {
    url::form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_mode_allows_loopback_origins_only() {
        let p = OriginPolicy::new(&[], true);
        for ok in [
            "http://localhost:4433",
            "http://127.0.0.1:8080",
            "https://[::1]:4433",
            "http://localhost",
        ] {
            assert!(p.allows(Some(ok)), "{ok}");
        }
        for bad in [
            "http://evil.example",
            "http://localhost.evil.example",
            "http://127.0.0.1.nip.io:4433",
            "http://localhost:80@evil",
            "null",
            "file://",
        ] {
            assert!(!p.allows(Some(bad)), "{bad}");
        }
        assert!(p.allows(None));
    }

    #[test]
    fn production_allows_only_the_list() {
        let p = OriginPolicy::new(&["https://Game.example/".into()], false);
        assert!(p.allows(Some("https://game.example")));
        assert!(!p.allows(Some("http://localhost:4433")));
        assert!(!p.allows(Some("https://game.example.evil")));
        assert!(OriginPolicy::new(&["*".into()], false).allows(Some("https://x.y")));
    }

    #[test]
    fn tokens_sign_verify_expire_and_resist_tampering() {
        let k = TokenKey::new(b"secret");
        let claims = Claims {
            exp: 1000,
            room: Some("arena".into()),
        };
        let t = k.sign(&claims);
        assert_eq!(k.verify(&t, 999), Ok(claims));
        assert_eq!(k.verify(&t, 1000), Err(TokenError::Expired));
        assert_eq!(
            TokenKey::new(b"other").verify(&t, 0),
            Err(TokenError::BadSignature)
        );
        let (_, sig) = t.split_once('.').unwrap();
        let forged = format!(
            "{}.{sig}",
            URL_SAFE_NO_PAD.encode(br#"{"exp":99999999999}"#)
        );
        assert_eq!(k.verify(&forged, 0), Err(TokenError::BadSignature));
        assert_eq!(k.verify("garbage", 0), Err(TokenError::Malformed));
    }

    #[test]
    fn token_is_read_from_the_query_string() {
        assert_eq!(
            token_from_query(Some("a=1&token=x%2Ey")),
            Some("x.y".into())
        );
        assert_eq!(token_from_query(Some("a=1")), None);
        assert_eq!(token_from_query(None), None);
    }
}
